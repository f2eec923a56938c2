"""What a sweep writes to its run folder (a bucket's traffic) in checkpoints: the plan line's
figures (`raygenre.sweep.tuner.checkpoint_traffic`) for a grid at a preset, on GTZAN-sized
splits (10 genres; 100 validation tracks of 6 segments), without data, Ray or a GPU.

    python bench/checkpoint_traffic.py [--grid batch_epoch] [--preset study]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

from raygenre.config import PRESETS
from raygenre.grid.file import load_grid
from raygenre.grid.resolved import resolve
from raygenre.paths import RunPaths
from raygenre.storage import Location
from raygenre.sweep.tuner import checkpoint_traffic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", default="batch_epoch")
    ap.add_argument("--preset", default="study", choices=list(PRESETS))
    args = ap.parse_args()
    grid = load_grid(args.grid)
    sweep = resolve(grid, args.preset, None)
    base = sweep.base
    segment = int(round(base.segment_seconds * base.sample_rate))
    prepared = SimpleNamespace(genres=tuple(range(10)), counts={"val": 600},
                               segment_samples=segment)
    paths = RunPaths(Location("s3://BUCKET/raygenre/runs"), grid.name, Path("results"))
    print(f"{args.grid} --preset {args.preset}: {checkpoint_traffic(sweep.plans, prepared, paths)}")


if __name__ == "__main__":
    main()
