"""bench/reproducibility.py (CI runs it on every stop) on two fabricated runs of a grid whose
agreement is known cell by cell."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import reproducibility as rp  # noqa: E402

COL = "best/val/acc"
HEADER = ["cell_id", "status", "batch_size", "epochs", "epoch", COL, f"{COL} ci_lo",
          f"{COL} ci_hi", "tied_with_best"]


def _run(folder: Path, cells: dict[tuple[int, int], tuple[float, float, float, bool]],
         name: str = rp.CELLS) -> Path:
    folder.mkdir(parents=True)
    with open(folder / name, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for n, ((bs, ep), (value, lo, hi, tied)) in enumerate(sorted(cells.items())):
            w.writerow([f"c{n}", "completed", bs, ep, ep, value, lo, hi, tied])
    return folder


def test_each_cell_counted_identical_moved_or_outside_its_interval(tmp_path: Path) -> None:
    before = _run(tmp_path / "before", {(16, 3): (0.60, 0, 0, False),
                                        (16, 5): (0.70, 0, 0, False),
                                        (32, 3): (0.80, 0, 0, False),
                                        (32, 5): (0.50, 0, 0, False)},
                  name=rp.OLD_CELLS)  # a folder from before cells were named
    after = _run(tmp_path / "after", {
        (16, 3): (0.60, 0.50, 0.70, False),  # identical
        (16, 5): (0.76, 0.65, 0.85, True),  # moved 0.06, inside; the new winner
        (32, 3): (0.74, 0.64, 0.79, True),  # the old winner: moved, outside, tied
        (32, 5): (0.52, 0.40, 0.60, False)})  # moved 0.02, inside
    body, figures = rp.compare(rp._rows(rp._written(before)), rp._rows(rp._written(after)),
                               COL, "HEAD", str(after))
    assert figures == {"cells": 4, "identical": 1, "moved_0.05": 2, "inside_interval": 3}
    rows = {line.split(" | ")[0]: line for line in body if line.startswith("| batch_size")}
    assert rows["| batch_size=32 epochs=3"].endswith("| -0.060 | no |")
    assert rows["| batch_size=16 epochs=5"].endswith("| +0.060 | yes |")
    assert ("The committed winner (batch_size=32 epochs=3) is tied with the new winner "
            "(batch_size=16 epochs=5) in the new run.") in body[-2]
    assert body[-1] == ""  # not every cell identical: no claim of shared arithmetic


def test_identical_runs_say_so_and_other_cells_are_refused(tmp_path: Path) -> None:
    cells = {(16, 3): (0.6, 0.5, 0.7, False), (16, 5): (0.7, 0.6, 0.8, True)}
    a, b = _run(tmp_path / "a", cells), _run(tmp_path / "b", cells)
    body, figures = rp.compare(rp._rows(rp._written(a)), rp._rows(rp._written(b)), COL,
                               "HEAD", "b")
    assert figures == {"cells": 2, "identical": 2, "moved_0.05": 0, "inside_interval": 2}
    assert "the new winner too" in body[-2] and "bit-identical" in body[-1]
    other = _run(tmp_path / "c", {**cells, (32, 3): (0.5, 0.4, 0.6, False)})
    with pytest.raises(SystemExit, match=r"other cells: \[\(\('batch_size', '32'\)"):
        rp.compare(rp._rows(rp._written(a)), rp._rows(rp._written(other)), COL, "HEAD", "c")
