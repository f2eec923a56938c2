"""Sweep throughput: one fixed grid at concurrency 1 and at the machine's best concurrency.

The grid: CNN1 on spectrograms (CPU preset), batch 32, EPOCHS epochs, one cell per seed, each its
own Tune trial (TRIALS trials of equal cost), every trial in full. Three runs of the same command:
  1 at a time, 1 core each (the linear-scaling reference: one trial's speed);
  1 at a time, all cores (one trial with every core as torch threads);
  as raygenre sizes it (cores / 1 per trial on a small machine).
Times are `Tuner.fit`'s wall (Ray start and results excluded: the same in all three).

    python bench/concurrency.py [--trials 4] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from _common import cnn1_grid, report, run_cli


def sweep(tmp: Path, label: str, grid: Path, extra: list[str]) -> dict:
    out = tmp / label
    run = run_cli([str(grid), "--preset", "cpu", "--storage", str(out / "runs"),
                   "--results", str(out / "results"), *extra])
    best = json.loads((out / "results" / grid.stem / "best.json").read_text())
    plan = next(line for _, line in run.lines if "trial(s) at once" in line)
    return {"fit_s": best["wall_s"], "plan": plan.split(";", 1)[-1].strip()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench_concurrency_") as d:
        tmp = Path(d)
        grid = cnn1_grid(tmp, "concurrency", "bench/concurrency.py - equal trials, one per seed",
                         args.epochs, list(range(args.trials)))
        runs = {
            "1 at a time, 1 core": sweep(tmp, "c1", grid, ["--max-concurrent", "1",
                                                          "--cpus-per-trial", "1"]),
            f"1 at a time, {cores} cores": sweep(tmp, "c1all", grid, [
                "--max-concurrent", "1", "--cpus-per-trial", str(cores)]),
            "raygenre's default": sweep(tmp, "best", grid, []),
        }
    base = runs["1 at a time, 1 core"]["fit_s"]
    allcores = runs[f"1 at a time, {cores} cores"]["fit_s"]
    best = runs["raygenre's default"]["fit_s"]
    body = [f"{args.trials} equal trials (CNN1, CPU preset, batch 32, {args.epochs} epochs, "
            f"seeds 0-{args.trials - 1}), every trial in full; `Tuner.fit` wall time.", "",
            "| run | plan | sweep s | trials/hour | speed-up over 1 at a time, 1 core |",
            "|---|---|---:|---:|---:|"]
    for label, r in runs.items():
        body.append(f"| {label} | {r['plan']} | {r['fit_s']:.0f} | "
                    f"{args.trials * 3600 / r['fit_s']:.0f} | {base / r['fit_s']:.2f} |")
    report("concurrency", "Sweep throughput: concurrency 1 against the machine's best", body, {
        "concurrency_speedup": f"{base / best:.2f}",
        "speedup_over_one_trial_all_cores": f"{allcores / best:.2f}",
        "trials_per_hour": f"{args.trials * 3600 / best:.0f}",
    })


if __name__ == "__main__":
    sys.exit(main())
