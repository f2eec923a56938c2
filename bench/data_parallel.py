"""The data-parallel runner: one trial on 2 Ray Train workers (DDP over gloo) against the same
trial in one process, on this machine's 2 cores.

One CNN1 trial (CPU preset, batch 32, EPOCHS epochs) three ways: one process with 1 core, one
process with 2 cores (2 torch threads), and 2 Ray Train workers with 1 core each (each worker
trains on half the data per epoch; their gradients are averaged). Reported as measured: on one
small machine DDP pays its process start-up and gradient exchange for no more cores than the
second case has; it is for trials that span several GPUs or machines.

    python bench/data_parallel.py [--epochs 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

from _common import cnn1_grid, report, run_cli


def sweep(tmp: Path, label: str, grid: Path, extra: list[str]) -> dict:
    out = tmp / label
    run_cli([str(grid), "--preset", "cpu", "--storage", str(out / "runs"), "--results",
             str(out / "results"), *extra])
    folder = out / "results" / grid.stem
    best = json.loads((folder / "best.json").read_text())
    (cell,) = list(csv.DictReader(open(folder / "cells.csv")))
    return {"fit_s": best["wall_s"], "train_s": float(cell["train_s"]),
            "epochs": int(cell["epoch"]), "val": float(cell["best/val/acc"]),
            "test": best["test/acc"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_dp_") as d:
        tmp = Path(d)
        grid = cnn1_grid(tmp, "dp", "bench/data_parallel.py - one CNN1 trial", args.epochs, [0])
        runs = {
            "one process, 1 core": sweep(tmp, "one1", grid, ["--cpus-per-trial", "1"]),
            "one process, 2 cores": sweep(tmp, "one2", grid, ["--cpus-per-trial", "2"]),
            "Ray Train, 2 workers x 1 core": sweep(tmp, "dp2", grid, [
                "--workers-per-trial", "2", "--cpus-per-trial", "2"]),
        }
    base = runs["one process, 1 core"]
    body = [f"One CNN1 trial (CPU preset, batch 32 per worker, {args.epochs} epochs, seed 0, "
            "built-in data); `Tuner.fit` wall and the trial's own epoch time.", "",
            "| how | sweep wall s | s per epoch | speed-up per epoch over 1 core | best val/acc "
            "| test/acc |", "|---|---:|---:|---:|---:|---:|"]
    for label, r in runs.items():
        per = r["train_s"] / r["epochs"]
        body.append(f"| {label} | {r['fit_s']:.1f} | {per:.2f} | "
                    f"{base['train_s'] / r['train_s']:.2f} | {r['val']:.3f} | {r['test']:.3f} |")
    body += ["", "Two workers see half the data each per epoch and average gradients, so an "
                 "epoch takes half as many optimizer steps of twice the batch: the accuracy is "
                 "that of another recipe, not the same trial faster."]
    dp, two = runs["Ray Train, 2 workers x 1 core"], runs["one process, 2 cores"]
    report("data_parallel", "Data-parallel trial: 2 Ray Train workers against one process",
           body, {
               "dp2_epoch_speedup_over_1core": f"{base['train_s'] / dp['train_s']:.2f}",
               "one_process_2cores_epoch_speedup": f"{base['train_s'] / two['train_s']:.2f}",
               "dp2_wall_over_one_process_2cores": f"{dp['fit_s'] / two['fit_s']:.2f}",
           })


if __name__ == "__main__":
    sys.exit(main())
