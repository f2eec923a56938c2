"""What a trial costs besides its training: start-up and tear-down, per trial, in wall seconds.

A grid of N equal, short trials (an MLP on waveforms, one epoch each, every trial in full), run
one at a time on one core, so nothing else competes: the sweep's wall time minus the trials'
summed epoch compute, over N, is each trial's fixed cost (scheduling, process, imports, data
handles, the first batch's latency, the report, tear-down until the slot is free). The same
grid is run with the one-process runner and, for comparison, with the loop under Ray Train
(`--workers-per-trial 2`, as a data-parallel trial). Also reported: the median over trials of
cells.csv's `wall_s - train_s` on `batch_epoch --smoke` (Tune's own trial time: it starts once
the trial's process is up, so it misses the process start that the first figure includes).

    python bench/trial_cost.py [--trials 8]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
from pathlib import Path

from _common import report, run_cli, write_grid


def sweep(tmp: Path, label: str, grid: Path, extra: list[str]) -> dict:
    out = tmp / label
    run_cli([str(grid), "--storage", str(out / "runs"), "--results", str(out / "results"),
             *extra])
    folder = out / "results" / (grid.stem + ("-smoke" if "--smoke" in extra else ""))
    best = json.loads((folder / "best.json").read_text())
    cells = list(csv.DictReader(open(folder / "cells.csv")))
    # One row per Tune trial (its longest cell's): cells that share a trial trained it once.
    trials = {c["trial_id"]: c for c in sorted(cells, key=lambda c: int(c["epoch"]))}
    train = sum(float(c["train_s"]) for c in trials.values())
    return {"fit_s": best["wall_s"], "train_s": train, "n": len(trials),
            "median_gap": statistics.median(float(c["wall_s"]) - float(c["train_s"])
                                            for c in trials.values())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_trial_cost_") as d:
        tmp = Path(d)
        grid = write_grid(tmp, "trialcost", f"""\
description: bench/trial_cost.py - equal one-epoch trials
asha: false
base: {{model: mlp, features: waveform, hidden: [16], epochs: 1, batch_size: 64}}
grid:
  seed: {list(range(args.trials))}
""")
        one = sweep(tmp, "one", grid, ["--max-concurrent", "1", "--cpus-per-trial", "1"])
        train = sweep(tmp, "train", grid, ["--max-concurrent", "1", "--cpus-per-trial", "2",
                                           "--workers-per-trial", "2"])
        smoke = sweep(tmp, "smoke", Path(__file__).resolve().parent.parent / "grids"
                      / "batch_epoch.yaml", ["--smoke"])
    rows = []
    for label, r in (("one process (the default)", one), ("Ray Train, 2 workers", train)):
        fixed = (r["fit_s"] - r["train_s"]) / r["n"]
        rows.append(f"| {label} | {r['n']} | {r['fit_s']:.1f} | {r['train_s']:.1f} | "
                    f"{fixed:.1f} | {r['median_gap']:.1f} |")
    body = [f"{args.trials} equal trials (MLP on waveforms, 1 epoch, built-in data, CPU preset),"
            " one at a time; `Tuner.fit` wall time.", "",
            "| runner | trials | sweep wall s | summed epoch compute s | fixed cost per trial s "
            "| median cells.csv wall_s - train_s |", "|---|---:|---:|---:|---:|---:|", *rows, "",
            f"`batch_epoch --smoke` ({smoke['n']} trials, 2 at a time): median cells.csv "
            f"`wall_s - train_s` over trials = {smoke['median_gap']:.1f} s."]
    report("trial_cost", "Per-trial fixed cost: one process against Ray Train", body, {
        "fixed_cost_per_trial_s": f"{(one['fit_s'] - one['train_s']) / one['n']:.1f}",
        "fixed_cost_per_trial_train_runner_s":
            f"{(train['fit_s'] - train['train_s']) / train['n']:.1f}",
        "smoke_median_wall_minus_train_s": f"{smoke['median_gap']:.1f}",
    })


if __name__ == "__main__":
    sys.exit(main())
