"""A sweep joins an already running Ray instance (`--address`), with its run folder, prepared
data and raw audio all given as URIs: the cluster setup, on one machine."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .conftest import run_cli


def test_sweep_on_a_running_instance_with_uri_storage_and_data(tmp_path: Path,
                                                               builtin_small: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    bucket = tmp_path / "bucket"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        args = ["batch_epoch", "--smoke", "--address", cluster.address,
                "--results", str(tmp_path / "results"),
                "--storage", f"file://{bucket}/runs", "--cache", f"file://{bucket}/cache",
                "--data", f"file://{builtin_small}"]
        proc = run_cli(args, cwd=tmp_path)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-4000:]
        # It used the running instance: it is still up after the sweep and saw the trials.
        ray.init(address=cluster.address)
        assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 2
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert f"[grid] storage file://{bucket}/runs: one machine" in log
    assert f"[data] fetching file://{builtin_small}" in log
    assert "prepared data shared at" in log
    out = tmp_path / "results" / "batch_epoch-smoke"
    with open(out / "cells.csv") as f:
        cells = list(csv.DictReader(f))
    assert cells and all(c["status"] in ("completed", "stopped_early") for c in cells)
    best = json.loads((out / "best.json").read_text())
    # Checkpoints went to the "bucket", the prepared data set too (for the next machine).
    assert best["checkpoint"].startswith(f"file://{bucket}/runs/batch_epoch-smoke/")
    ckpt = Path(best["checkpoint"][len("file://"):])
    assert (ckpt / "state.pt").exists() and (ckpt / "meta.json").exists()
    (shared,) = (bucket / "cache" / "prepared").iterdir()
    assert {"train.arrow", "val.arrow", "test.arrow", "meta.json"} <= {
        p.name for p in shared.iterdir()}
