"""ASHA against running every trial in full, on the batch_epoch grid (the default job).

Two runs of `python -m raygenre.grid batch_epoch` on the built-in data, the second from the same
grid file with `asha: false`. Compute is counted in trial-epochs (what ASHA saves, independent of
this machine's noise); wall time and the best `val/acc` of each run are reported beside it.

    python bench/asha.py [--grid batch_epoch] [--smoke]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import yaml
from _common import report, run_cli, write_grid

from raygenre.grid.file import grid_path


def sweep(tmp: Path, grid: Path, smoke: bool) -> dict:
    out = tmp / grid.stem
    run_cli([str(grid), "--storage", str(out / "runs"), "--results", str(out / "results")]
            + (["--smoke"] if smoke else []))
    folder = out / "results" / (grid.stem + ("-smoke" if smoke else ""))
    cells = list(csv.DictReader(open(folder / "cells.csv")))
    best = json.loads((folder / "best.json").read_text())
    # Compute is counted per trial: cells that share a trial (epoch-prefixes) trained it once.
    trials = {c["trial_id"]: c for c in sorted(cells, key=lambda c: int(c["epoch"]))}
    return {"trial_epochs": sum(int(c["epoch"]) for c in trials.values()),
            "trial_s": sum(float(c["wall_s"]) for c in trials.values()), "trials": len(trials),
            "cells": sum(c["status"] != "stopped_early" for c in cells),
            "fit_s": best["wall_s"], "best_val": max(float(c["best/val/acc"]) for c in cells),
            "test": best["test/acc"], "best_cell": best["cell_id"],
            "best_config": {k: best["config"][k] for k in ("batch_size", "epochs")
                            if k in best["config"]},
            "stopped": sum(c["status"] == "stopped_early" for c in cells), "n": len(cells)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", default="batch_epoch")
    ap.add_argument("--smoke", action="store_true", help="a quick check of this script")
    args = ap.parse_args()
    raw = yaml.safe_load(grid_path(args.grid).read_text())
    raw.pop("asha", None)
    with tempfile.TemporaryDirectory(prefix="bench_asha_") as d:
        tmp = Path(d)
        asha = sweep(tmp, write_grid(tmp, args.grid, yaml.safe_dump(raw)), args.smoke)
        full = sweep(tmp, write_grid(tmp, f"{args.grid}_full",
                                     yaml.safe_dump({**raw, "asha": False})), args.smoke)
    saving = full["trial_epochs"] / asha["trial_epochs"]
    delta = asha["best_val"] - full["best_val"]
    body = [f"Grid `{args.grid}`{' (--smoke)' if args.smoke else ''} on the built-in data, "
            f"{asha['n']} cells in {asha['trials']} trials (cells that differ only in epochs "
            f"share one), 2 at a time on this machine; ASHA on `epoch` (grace 1, reduction 3) "
            f"over trials.", "",
            "| | ASHA | every trial in full | full / ASHA |", "|---|---:|---:|---:|",
            f"| epochs trained (summed over trials) | {asha['trial_epochs']} | "
            f"{full['trial_epochs']} | {saving:.2f} |",
            f"| trial time summed, s | {asha['trial_s']:.0f} | {full['trial_s']:.0f} | "
            f"{full['trial_s'] / asha['trial_s']:.2f} |",
            f"| cells answered in full (not stopped early) | {asha['cells']} | "
            f"{full['cells']} | |",
            f"| sweep wall, s | {asha['fit_s']:.0f} | {full['fit_s']:.0f} | "
            f"{full['fit_s'] / asha['fit_s']:.2f} |",
            f"| cells stopped early | {asha['stopped']} | {full['stopped']} | |",
            f"| best val/acc | {asha['best_val']:.4f} | {full['best_val']:.4f} | |",
            f"| best cell | {asha['best_config']} | {full['best_config']} | |",
            f"| its test/acc | {asha['test']:.4f} | {full['test']:.4f} | |"]
    report("asha", "ASHA against every trial in full", body, {
        "asha_compute_saving": f"{saving:.2f}",
        "asha_best_acc_delta": f"{delta:+.4f}",
        "asha_wall_saving": f"{full['fit_s'] / asha['fit_s']:.2f}",
    })


if __name__ == "__main__":
    sys.exit(main())
