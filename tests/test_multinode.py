"""Two Ray nodes on this machine: trials spread over both, and losing one mid-sweep loses no
trial (slow)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_sweep_spreads_over_two_nodes_and_survives_losing_one(tmp_path: Path,
                                                              smoke_run: dict) -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        # 4 trials of 2 epochs (no epoch-prefix sharing, no ASHA): one per node at a time.
        grid = tmp_path / "four.yaml"
        grid.write_text("description: four trials\nasha: false\n"
                        "base: {model: cnn1, features: spectrogram, epochs: 2}\n"
                        "grid: {batch_size: [16, 20], lr: [0.0004, 0.001]}\n")
        args = [str(grid), "--smoke", "--address", cluster.address, "--results",
                str(tmp_path / "r"), "--storage", str(tmp_path / "s"), "--cache",
                str(smoke_run["base"] / "cache")]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "raygenre.grid", *args], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        lines, started, t0 = [], set(), time.time()
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("[tune") and " epoch 1/" in line:
                started.add(line.split("]", 1)[1].split()[0])
            if len(started) == 2:
                break  # two trials are under way, one on each node
            assert time.time() - t0 < 600, "".join(lines[-40:])
        cluster.remove_node(worker)
        out, _ = proc.communicate(timeout=900)
        log = "".join(lines) + out
        assert proc.returncode == 0, log[-4000:]
    finally:
        cluster.shutdown()
    with open(tmp_path / "r" / "four-smoke" / "cells.csv") as f:
        cells = list(csv.DictReader(f))
    assert len(cells) == 4 and len({c["cell_id"] for c in cells}) == 4
    assert len({c["trial_id"] for c in cells}) == 4
    assert all(c["status"] == "completed" for c in cells), cells
    with open(tmp_path / "r" / "four-smoke" / "history.csv") as f:
        history = list(csv.DictReader(f))
    for c in cells:  # every epoch once, none lost or doubled
        epochs = [h["epoch"] for h in history if h["cell_id"] == c["cell_id"]]
        assert epochs == ["1", "2"], (c["cell_id"], epochs)
    # Both nodes ran epochs (each Tune result names the node it came from).
    nodes = {json.loads(line)["node"] for d in (tmp_path / "s" / "four-smoke").glob("*_0000*")
             for line in (d / "result.json").read_text().splitlines()}
    assert len(nodes) == 2, nodes


def test_two_sweeps_at_once_on_one_machine_both_finish(tmp_path: Path, smoke_run: dict) -> None:
    """Two terminals, two sweeps: each starts its own Ray instance. Ray Train's helpers used to
    find both instances, fail, and leave both sweeps waiting forever."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = []
    for i in range(2):
        args = ["batch_epoch", "--smoke", "--results", str(tmp_path / f"r{i}"), "--storage",
                str(tmp_path / f"s{i}"), "--cache", str(smoke_run["base"] / "cache")]
        procs.append(subprocess.Popen([sys.executable, "-m", "raygenre.grid", *args],
                                      cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
        time.sleep(2)
    for p in procs:
        out, _ = p.communicate(timeout=900)
        assert p.returncode == 0, out[-3000:]
    for i in range(2):
        assert (tmp_path / f"r{i}" / "batch_epoch-smoke" / "best.json").exists()
