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
        # One trial at a time: the cluster then holds exactly the node the running trial
        # needs, so when that node is lost no other node can take the trial (no idle node, no
        # other trial's finished process for Tune to reuse) and its retry waits for a node the
        # autoscaler launches after the loss. (Tune's variant generator makes the next trial
        # only once the running one is done, retries included: tune/search/basic_variant.py.)
        args = ["batch_epoch", "--smoke", "--preset", "cpu", "--address", cluster.address,
                "--storage", storage, "--cache", str(smoke_run["base"] / "cache"),
                "--results", str(tmp_path / "results"), "--max-concurrent", "1"]
        env = {**cluster.env, "PYTHONUNBUFFERED": "1", CPU_FOR_MISSING_GPU: "1"}
        proc = subprocess.Popen([sys.executable, "-m", "raygenre.grid", *args], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        try:
            lines = _read_until(proc, " epoch 1/2", timeout=600)
            victim_trial, _ = _epoch_line(lines[-1])  # type: ignore[misc]
            victim_pid = _driver_results(cluster, victim_trial)[-1]["pid"]
            before = set(cluster.worker_nodes())
            t_kill = time.time()
            killed = fakecluster.kill_node_of(cluster, victim_pid)
            out = _finish(proc, 600)
            t_done = time.time()
        finally:
            if proc.poll() is None:
                proc.kill()
        log = "".join(lines) + out
        (tmp_path / "sweep.log").write_text(log)
        assert proc.returncode == 0, log[-5000:]
        after = set(cluster.worker_nodes())
        nodes, actors = cluster.state()
    finally:
        cluster.stop()
    wall = time.time() - t0

    # Trials were sized for cluster.yaml's GPU type before any GPU node existed, and its
    # requests brought the nodes: a GPU each, on the CPU because torch sees no GPU here.
    assert "no GPU in the cluster yet: trials wait for the autoscaler's GPU nodes" in log
    assert "1 trial(s) at once, each one process (1 CPU, 1 GPU, 1 torch thread(s))" in log
    assert f"[ray] {CPU_FOR_MISSING_GPU}=1" in log
    # At the kill the cluster was the head and the one node the trial's request had added:
    # nothing else could take the trial.
    assert before == {killed}, (before, killed)
    assert killed not in after and nodes[killed].state == "DEAD"

    # The killed trial went on from its checkpoint of epoch 1: its next epoch line is epoch 2,
    # none says epoch 1 again, and epoch 2 came from another process than the killed one.
    trial_lines = [e for line in out.splitlines()
                   if (e := _epoch_line(line)) and e[0] == victim_trial]
    assert trial_lines and trial_lines[0] == (victim_trial, 2), (trial_lines, log[-4000:])
    assert (victim_trial, 1) not in trial_lines
    rows = [json.loads(x) for x in s3.client().get_object(
        Bucket=bucket, Key=f"runs/batch_epoch-smoke/{victim_trial}/result.json")["Body"]
        .read().decode().splitlines() if x.strip()]
    assert [r["epoch"] for r in rows] == [1, 2], rows
    assert rows[0]["pid"] == victim_pid and rows[1]["pid"] != victim_pid
    # Where each ran, as Ray's state API recorded it: epoch 1 on the killed node; epoch 2 on
    # a node that did not exist at the kill (a new id, started after it), alive at the end.
    assert actors[victim_pid].node_id == killed
    retry = actors[rows[1]["pid"]].node_id
    assert retry not in before and retry in after, (retry, before, after)
    assert nodes[retry].start_time_ms / 1000 > t_kill, (nodes[retry], t_kill)
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
          f"after the kill; the retry's node {retry[-5:]} started "
          f"{nodes[retry].start_time_ms / 1000 - t_kill:.1f} s after the kill of {killed[-5:]}; "
          f"worker nodes in all: "
          f"{sorted(n[-5:] for n in nodes if n != fakecluster.FAKE_HEAD_NODE_ID)}")
