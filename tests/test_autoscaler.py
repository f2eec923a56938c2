"""cluster.yaml's node types under Ray's autoscaler, on this machine (slow).

Ray's `fake_multinode` provider plays the cloud (tests/fakecluster.py): the head starts alone,
the sweep's GPU trials make the autoscaler add GPU-type nodes (fake GPUs: trials train on the
CPU), one node is killed mid-trial as a reclaimed spot instance is, and the trial goes on
elsewhere from its last checkpoint in the bucket (moto's S3 server, tests/s3server.py), with
the numbers of a run never interrupted.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from raygenre.sweep.cluster import CPU_FOR_MISSING_GPU

from . import fakecluster, s3server
from .conftest import history_by_config
from .test_grid_e2e import assert_every_row_equal
from .test_resume import _finish, _read_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def _epoch_line(line: str) -> tuple[str, int] | None:
    """(trial id, epoch) of a progress line "[tune ...] <trial> epoch E/N ...", else None."""
    if not line.startswith("[tune"):
        return None
    words = line.split("]", 1)[1].split()
    if len(words) < 3 or words[1] != "epoch":
        return None
    return words[0], int(words[2].split("/")[0])


def _driver_results(cluster: fakecluster.FakeCluster, trial_id: str,
                    timeout: float = 60) -> list[dict]:
    """A trial's result rows as the driver logged them so far (Tune's result.json, in the head's
    session folder before it goes to the bucket)."""
    deadline = time.time() + timeout
    while True:
        for f in cluster.tmp.glob(f"ray/session_*/artifacts/*/*/driver_artifacts/"
                                  f"{trial_id}/result.json"):
            rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
            if rows:
                return rows
        assert time.time() < deadline, f"no result.json of {trial_id} under {cluster.tmp}"
        time.sleep(0.5)


def test_scaled_node_types_keep_gpus_and_names_and_fit_this_machine() -> None:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    types = fakecluster.scaled_node_types(config)
    workers = {n: s for n, s in config["available_node_types"].items()
               if n != config["head_node_type"]}
    assert set(types) == {fakecluster.FAKE_HEAD_TYPE, *workers}
    assert types[fakecluster.FAKE_HEAD_TYPE]["max_workers"] == 0
    for name, spec in workers.items():
        assert types[name]["resources"]["CPU"] == fakecluster.NODE_CPUS
        assert types[name]["resources"].get("GPU") == spec["resources"].get("GPU")
        assert 0 < types[name]["max_workers"] <= fakecluster.MAX_PER_TYPE
    assert any(s["resources"].get("GPU") for s in types.values()), "cluster.yaml has no GPU type"


def test_autoscaled_gpu_nodes_and_a_reclaimed_node_lose_at_most_one_epoch(
        tmp_path: Path, s3: s3server.S3Server, smoke_run: dict) -> None:
    bucket = s3.bucket()
    storage = f"s3://{bucket}/runs"
    cluster_dir = tmp_path / "cluster"
    t0 = time.time()
    cluster = fakecluster.start(cluster_dir, ROOT / "cluster.yaml", s3server.with_env(s3))
    try:
        assert cluster.worker_raylets() == [], "a worker node before any trial asked for one"
        # The smoke run's grid and settings (its cache too): its history is the reference.
        # The preset is named: with a GPU per trial, "auto" would pick the study's.
        args = ["batch_epoch", "--smoke", "--preset", "cpu", "--address", cluster.address,
                "--storage", storage, "--cache", str(smoke_run["base"] / "cache"),
                "--results", str(tmp_path / "results")]
        env = {**cluster.env, "PYTHONUNBUFFERED": "1", CPU_FOR_MISSING_GPU: "1"}
        proc = subprocess.Popen([sys.executable, "-m", "raygenre.grid", *args], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        # Which node each trial process ran on, looked up while it runs.
        seen: dict[int, int] = {}
        watching = threading.Event()
        watching.set()

        def watch() -> None:
            while watching.is_set():
                seen.update(cluster.trial_nodes())
                time.sleep(0.5)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            lines = _read_until(proc, " epoch 1/2", timeout=600)
            victim_trial, _ = _epoch_line(lines[-1])  # type: ignore[misc]
            victim_pid = _driver_results(cluster, victim_trial)[-1]["pid"]
            raylets_before = {p.pid for p in cluster.worker_raylets()}
            killed = fakecluster.kill_node_of(cluster, victim_pid)
            t_kill = time.time()
            out = _finish(proc, 600)
            t_done = time.time()
        finally:
            watching.clear()
            watcher.join(timeout=30)
            if proc.poll() is None:
                proc.kill()
        log = "".join(lines) + out
        (tmp_path / "sweep.log").write_text(log)
        assert proc.returncode == 0, log[-5000:]
        raylets_after = {p.pid for p in cluster.worker_raylets()}
    finally:
        cluster.stop()
    wall = time.time() - t0

    # Trials were sized for cluster.yaml's GPU type before any GPU node existed, and its
    # requests brought the nodes: a GPU each, on the CPU because torch sees no GPU here.
    assert "no GPU in the cluster yet: trials wait for the autoscaler's GPU nodes" in log
    assert "1 GPU, 1 torch thread(s))" in log
    assert f"[ray] {CPU_FOR_MISSING_GPU}=1" in log
    assert len(raylets_before) >= 2, "the two trials' requests did not add two GPU nodes"
    assert killed.pid in raylets_before and killed.pid not in raylets_after

    # The killed trial went on from its checkpoint of epoch 1: its next epoch line is epoch 2,
    # none says epoch 1 again, and epoch 2 came from another process than the killed one.
    after = [e for line in out.splitlines() if (e := _epoch_line(line)) and e[0] == victim_trial]
    assert after and after[0] == (victim_trial, 2), (after, log[-4000:])
    assert (victim_trial, 1) not in after
    rows = [json.loads(x) for x in s3.client().get_object(
        Bucket=bucket, Key=f"runs/batch_epoch-smoke/{victim_trial}/result.json")["Body"]
        .read().decode().splitlines() if x.strip()]
    assert [r["epoch"] for r in rows] == [1, 2], rows
    assert rows[0]["pid"] == victim_pid and rows[1]["pid"] != victim_pid
    assert seen[victim_pid] == killed.pid
    retry_node = seen[rows[1]["pid"]]
    assert retry_node != killed.pid and retry_node in raylets_after
    # Its checkpoints are in the bucket (nowhere else: the nodes share no disk).
    assert any(k.startswith(f"runs/batch_epoch-smoke/{victim_trial}/checkpoint_")
               for k in s3.keys(bucket, "runs/"))

    # Every history row equals the uninterrupted run's, and no epoch appears twice.
    out_dir = tmp_path / "results" / "batch_epoch-smoke"
    with open(out_dir / "history.csv") as f:
        history = list(csv.DictReader(f))
    for cell in {h["cell_id"] for h in history}:
        epochs = [h["epoch"] for h in history if h["cell_id"] == cell]
        assert len(epochs) == len(set(epochs)), (cell, epochs)
    assert_every_row_equal(history_by_config(out_dir / "history.csv"),
                           history_by_config(smoke_run["out"] / "history.csv"))
    with open(out_dir / "cells.csv") as f:
        assert all(c["status"] == "completed" for c in csv.DictReader(f))
    print(f"fake cluster: {wall:.0f} s in all; the sweep went on {t_done - t_kill:.0f} s "
          f"after the kill; worker nodes {len(raylets_before)} at the kill, the retry on a "
          f"{'new' if retry_node not in raylets_before else 'surviving'} one")
