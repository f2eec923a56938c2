"""Results folders written before cells and trials took Ray's words (2026-12-06), read as now.

Then a grid cell was called a trial (trials.csv, `trial_id`) and a Ray Tune trial a run
(`run_id`); the numbers are the same. `raygenre.load` and the results index read such a folder
through these renamings, so a sweep kept from then still opens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CELLS_FILE = "cells.csv"
OLD_CELLS_FILE = "trials.csv"
OLD_BARS = "val_acc_by_trial.png"  # now val_acc_by_cell.png
# Old column -> new, in cells.csv and history.csv (the order matters: trial_id is renamed first).
COLUMNS = {"trial_id": "cell_id", "run_id": "trial_id", "trials": "cells"}
BEST_KEYS = {"trial_id": "cell_id", "run_id": "trial_id", "chosen_trials": "chosen_cells",
             "n_trials": "n_cells", "n_runs": "n_trials"}


def cells_file(folder: Path) -> Path | None:
    """A results folder's table of cells: cells.csv, or an old folder's trials.csv."""
    for name in (CELLS_FILE, OLD_CELLS_FILE):
        if (folder / name).is_file():
            return folder / name
    return None


def current_best(best: dict[str, Any]) -> dict[str, Any]:
    """best.json's content under today's keys (an old file's renamed, a new one as it is)."""
    old = "run_id" in best or ("trial_id" in best and "cell_id" not in best)
    return renamed(best, BEST_KEYS) if old else best


def renamed(mapping: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """`mapping` with its old keys under their new names, in one pass (no chain renames)."""
    return {names.get(k, k): v for k, v in mapping.items()}


def columns_of(header: list[str]) -> dict[str, str]:
    """The renamings for a CSV header (cells.csv, history.csv, configs.csv): none for a file
    written since, which names cells `cell_id` (its `trial_id` is Tune's) and `cells`."""
    old = (("trial_id" in header and "cell_id" not in header)
           or ("trials" in header and "cells" not in header))
    return COLUMNS if old else {}


# A best.json without `judge_epoch` was written before the selection rules of 2026-12-07
# (issue #38). Its folder cannot be judged again where its run folder is gone (the validation
# predictions live there), so the page says what it is instead of showing it as current.
OLD_RULE = ("Judged under the old rule (before 2026-12-07): every cell at its best validation "
            "epoch, with the winner fixed across the bootstrap's draws: no P(best), no estimate "
            "of the winner on tracks not used to choose it, ties judged pairwise against that "
            "fixed winner, and seeds resampled by a plain bootstrap where intervals were drawn. "
            "Its validation figures run high (the best epoch and the best cell were both chosen "
            "on the same tracks) and any interval on them is too narrow. Judged now, each cell "
            "would be read at its last epoch unless its grid asks for early stopping (then the "
            "epoch is re-picked in every draw), and the winner re-chosen in every draw. Its test "
            "figures are the reads that were made, of the same checkpoints.")


def judged_before_selection(best: dict[str, Any]) -> bool:
    """True for a best.json written under the old rule (`OLD_RULE`)."""
    return "judge_epoch" not in best
