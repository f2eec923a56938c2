"""Same code, same seed, another machine: do two runs of a grid agree within their intervals?

Reads the cells.csv of two runs of one grid (by default the committed results/<grid>/ at a git
revision against a results folder just written here; a folder written before cells were named
holds the same rows as trials.csv) and, for every cell, compares the value each was judged on
(`last/<metric>` or `best/<metric>`, as the new run's best.json says: `judge_epoch`, `best` for
a run from before it was named). The claim it checks: on one machine and build the numbers are
bit-identical (tests/test_grid_e2e.py); across machines, float arithmetic differs in its last
bits, training paths drift apart, and the numbers agree only within their intervals.

    python bench/reproducibility.py --grid batch_epoch --before HEAD --after results/batch_epoch
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
from pathlib import Path

from _common import REPO, report

# A results folder's table of cells, and its name in folders written before cells were named
# (the columns read here, `status` to `epoch` and `best/...`, are the same in both).
CELLS, OLD_CELLS = "cells.csv", "trials.csv"


def _committed(rev: str, grid: str) -> str:
    """results/<grid>'s table of cells at a git revision."""
    for name in (CELLS, OLD_CELLS):
        proc = subprocess.run(["git", "show", f"{rev}:results/{grid}/{name}"], cwd=REPO,
                              capture_output=True, text=True)
        if proc.returncode == 0:
            return proc.stdout
    raise SystemExit(f"{rev}: no results/{grid}/{CELLS} (nor {OLD_CELLS}): "
                     f"{proc.stderr.strip()}")


def _written(folder: Path) -> str:
    """A results folder's table of cells."""
    path = folder / CELLS
    return (path if path.exists() else folder / OLD_CELLS).read_text()


def judged_at(folder: Path) -> str:
    """The epoch rule a results folder was judged by (best.json's `judge_epoch`); `best` for
    a folder written before the rule was named, when every cell was judged at its best."""
    return json.loads((folder / "best.json").read_text()).get("judge_epoch", "best")


def _rows(text: str) -> dict[tuple, dict]:
    """cells.csv keyed by the swept values: its columns between `status` and `epoch`."""
    rows = list(csv.DictReader(io.StringIO(text)))
    header = list(rows[0])
    swept = header[header.index("status") + 1:header.index("epoch")]
    return {tuple((k, r[k]) for k in swept): r for r in rows}


def compare(old: dict[tuple, dict], new: dict[tuple, dict], col: str, before: str,
            after: str) -> tuple[list[str], dict[str, int]]:
    """The table and its counts: cells identical, moved by 0.05 or more, and the committed
    value inside the new run's interval; and whether the committed winner is the new one, or
    tied with it."""
    if set(old) != set(new):
        raise SystemExit(f"the two runs hold other cells: {sorted(set(old) ^ set(new))}")
    body = [f"`{col}` of each cell: the committed run (`{before}`) against the run in "
            f"`{after}`, with the new run's 95% interval over validation tracks.", "",
            "| cell | before | after [95% CI] | difference | before inside? |",
            "|---|---:|---|---:|---|"]
    same = inside = moved = 0
    has_ci = f"{col} ci_lo" in next(iter(new.values()))
    for key in sorted(new, key=lambda k: [v for _, v in k]):
        a, b = float(old[key][col]), float(new[key][col])
        # A column the new run has no interval for (`best/<metric>` of a run judged at the last
        # epoch) is compared value for value only.
        lo, hi = ((float(new[key][f"{col} ci_{e}"]) for e in ("lo", "hi")) if has_ci
                  else (float("nan"),) * 2)
        ok = lo <= a <= hi
        same += a == b
        inside += ok
        moved += abs(a - b) >= 0.05
        label = " ".join(f"{k}={v}" for k, v in key)
        body.append(f"| {label} | {a:.3f} | {b:.3f} [{lo:.3f}, {hi:.3f}] | {b - a:+.3f} | "
                    f"{('yes' if ok else 'no') if has_ci else 'no interval'} |")
    n = len(new)
    pick = max(new, key=lambda k: float(new[k][col]))
    was = max(old, key=lambda k: float(old[k][col]))
    tied = new[was].get("tied_with_best")
    body += ["", f"{same} of {n} cells identical, {moved} moved by 0.05 or more; the "
                 + (f"committed value lies inside the new run's interval for {inside} of {n}. "
                    if has_ci else "new run draws no interval for this column. ")
                 + f"The committed winner ({' '.join(f'{k}={v}' for k, v in was)}) is "
                 + ("the new winner too." if was == pick else
                    f"{'tied with' if tied == 'True' else 'not tied with'} the new winner "
                    f"({' '.join(f'{k}={v}' for k, v in pick)}) in the new run.")]
    # Every cell identical says the two runs shared their arithmetic (CPU type, build, thread
    # count); the interval column is what a run on another machine may be held to.
    body.append("" if same < n else "Every cell is bit-identical: the two runs shared their "
                "arithmetic (the same CPU type, build and thread count).")
    figures = {"cells": n, "identical": same, "moved_0.05": moved}
    return body, figures | ({"inside_interval": inside} if has_ci else {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", default="batch_epoch")
    ap.add_argument("--before", default="HEAD", help="git revision of the committed run")
    ap.add_argument("--after", type=Path, help="results folder of the new run "
                                                "(default results/<grid>)")
    ap.add_argument("--metric", default="val/acc")
    ap.add_argument("--column", help="the column to compare (default: the one the new run was "
                                     "judged on, JUDGE/METRIC; `best/<metric>` is in every run)")
    args = ap.parse_args()
    after = args.after or REPO / "results" / args.grid
    old, new = _rows(_committed(args.before, args.grid)), _rows(_written(after))
    col = args.column or f"{judged_at(after)}/{args.metric}"
    for name, rows, needs in ((args.before, old, [col]), (str(after), new, [col])):
        missing = [c for c in needs if c not in next(iter(rows.values()))]
        if missing:
            raise SystemExit(f"{name}: its cells.csv has no {', '.join(missing)}: compare "
                             f"another column with --column, or commit a run judged as this "
                             f"one is")
    body, figures = compare(old, new, col, args.before, str(after))
    report("reproducibility", f"Reproducibility: {args.grid}, a committed run against a new one",
           body, figures)


if __name__ == "__main__":
    main()
