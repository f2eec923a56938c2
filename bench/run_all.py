"""Re-run every benchmark this machine can run, one after the other, each writing its
results/bench/NAME.md with the commit and command (bench/_common.report).

    python bench/run_all.py                 # every CPU benchmark, ~40 min on 2 cores
    python bench/run_all.py --only data,asha

Run it on an idle machine: the figures are ratios within one run, but another job on the same
cores moves them. Left out, because they need what this machine may not have:
- gpu.py: a GPU (`python bench/gpu.py` on the lent device; see its docstring);
- screen.py, track_pooling.py: a real-music grid's runs (their docstrings say which);
- reproducibility.py: a second run of a grid to compare (CI runs it on every change).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Cheapest first, so a failure shows early; the arguments are those the docs quote.
BENCHES: dict[str, list[str]] = {
    "data": [],
    "feature_storage": [],
    "epoch_cost": [],
    "trial_cost": [],
    "concurrency": [],
    "overhead": ["--repeat", "3"],
    "memory": [],
    "data_parallel": [],
    "asha": [],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated names (default: all of them)")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise SystemExit(f"--only: unknown benchmark(s) {unknown}; known: {sorted(BENCHES)}")
    took = {}
    for name in names:
        cmd = [sys.executable, str(HERE / f"{name}.py"), *BENCHES[name]]
        print(f"[bench] {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        # A failed benchmark stops the run: the figures after it would be measured on a
        # machine in an unknown state, and the files written so far stay as they are.
        subprocess.run(cmd, check=True, cwd=HERE.parent)
        took[name] = time.perf_counter() - t0
    for name, s in took.items():
        print(f"[bench] {name}: {s / 60:.1f} min -> results/bench/{name}.md")


if __name__ == "__main__":
    main()
