"""Peak memory of the driver and of one trial, and how it grows with the data (1x, 2x, 4x).

Data: the built-in generator at 20, 40 and 80 tracks per genre (1 200, 2 400, 4 800 segments;
the prepared waveforms are 441 KB a segment). Each size runs one CNN1 trial of one epoch through
`python -m raygenre.grid` (CPU preset) while a thread samples the memory of every process of
the run as PSS (a shared page split between the processes that map it): the driver (the
command itself), the trial (a Tune trial process that runs the training loop itself), the
raylet (which holds the object store, where the train and val splits live during the sweep)
and the sum over the tree.

    python bench/memory.py [--sizes 20,40,80]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _common import PeakRss, cnn1_grid, report, run_cli

from raygenre.data import synth
from raygenre.paths import default_cache

ROLES = {"trial": "ImplicitFunc", "raylet": "raylet"}


def one(tmp: Path, tracks: int) -> dict[str, float]:
    root = synth.ensure_builtin(default_cache(), tracks)
    grid = cnn1_grid(tmp, "memory", "bench/memory.py - one CNN1 trial of one epoch", 1, [0])
    sampler = PeakRss(ROLES, every_s=0.5)
    out = tmp / str(tracks)

    def watch(proc, line: str) -> None:
        if not getattr(watch, "started", False):
            sampler.watch(proc.pid)
            watch.started = True

    try:
        run_cli([str(grid), "--data", str(root), "--preset", "cpu", "--storage",
                 str(out / "runs"), "--results", str(out / "results")], on_line=watch,
                echo=False)
    finally:
        sampler.stop()
    return {**sampler.peak, **{f"{k} own": v for k, v in sampler.peak_own.items()},
            "object store": sampler.peak_store}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="20,40,80", help="tracks per genre, smallest first")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    peaks = {}
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as d:
        for n in sizes:
            peaks[n] = one(Path(d), n)
            print(f"{n} tracks/genre: " + ", ".join(f"{k} {v:.0f} MiB"
                                                     for k, v in peaks[n].items()), flush=True)
    cols = ["driver", "driver own", "trial", "trial own", "tree own", "object store"]
    body = ["Peak memory in MiB (PSS: a shared page split between the processes that map it); "
            "one CNN1 trial (CPU preset, batch 32, 1 epoch) per data size. Segments x 441 KB is "
            "what the prepared splits weigh: train and val (90%) go to Ray's object store once "
            "per sweep; the driver streams test after it. 'own' leaves out the object store's "
            "shared memory (/dev/shm/plasma*), whose pages show in the driver (it wrote them) "
            "and the trial (it reads them); 'object store' is those pages, summed over the "
            "run's processes; 'tree own' is every process of the run, object store left out.",
            "",
            "| tracks/genre | segments | prepared MB | " + " | ".join(cols) + " |",
            "|---:|---:|---:|" + "---:|" * len(cols)]
    for n, p in peaks.items():
        segs = n * 10 * 6
        body.append(f"| {n} | {segs} | {segs * 0.441:.0f} | "
                    + " | ".join(f"{p[c]:.0f}" for c in cols) + " |")
    lo, hi = sizes[0], sizes[-1]
    scale = hi / lo
    growth = {c: (peaks[hi][c] - peaks[lo][c]) / (segs_mb := (hi - lo) * 60 * 0.441)
              for c in cols}
    body += ["", f"Growth from {lo} to {hi} tracks/genre, MiB of peak PSS per MB of prepared "
                 f"data added ({segs_mb:.0f} MB): "
             + ", ".join(f"{c} {g:.2f}" for c, g in growth.items())]
    report("memory", "Peak memory of the driver and of one trial against data size", body, {
        "driver_peak_mib": f"{peaks[lo]['driver']:.0f}",
        "trial_peak_mib": f"{peaks[lo]['trial']:.0f}",
        f"driver_growth_{scale:g}x": f"{peaks[hi]['driver'] / peaks[lo]['driver']:.2f}",
        f"trial_growth_{scale:g}x": f"{peaks[hi]['trial'] / peaks[lo]['trial']:.2f}",
        f"driver_own_growth_{scale:g}x":
            f"{peaks[hi]['driver own'] / peaks[lo]['driver own']:.2f}",
        f"trial_own_growth_{scale:g}x":
            f"{peaks[hi]['trial own'] / peaks[lo]['trial own']:.2f}",
    })


if __name__ == "__main__":
    sys.exit(main())
