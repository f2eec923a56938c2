"""A grid's one objective: the metric cells are judged on and checkpoints kept by, and at which
of a cell's epochs it is read (`JUDGE_EPOCH`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Which epoch of a cell is judged, tested and compared. A cell's `epochs` means "train N
# epochs", and what that gives is the model after its last epoch: judged there, a 3-epoch cell
# can beat its 10-epoch cell when the data say so, which is the question an epochs axis asks
# (the study's exercise 6 read validation at the end of each run). 'best' (early stopping: the
# best validation epoch among the first N) is a choice a grid makes explicitly; it makes the
# epochs axis non-decreasing by construction and is one more choice made on the validation
# tracks, so the report re-picks the epoch inside every bootstrap draw (report/verdict.py).
JUDGE_EPOCH = "last"
JUDGE_EPOCHS = {"last": "last epoch", "best": "best validation epoch (early stopping)"}


@dataclass(frozen=True)
class Objective:
    """A grid's one objective: what cells are judged on and checkpoints kept by, and at which
    of a cell's epochs (`JUDGE_EPOCH`)."""

    metric: str
    mode: str
    epoch: str = JUDGE_EPOCH

    @property
    def best_column(self) -> str:
        """Its best value over a cell's epochs, as a table column."""
        return f"best/{self.metric}"

    @property
    def column(self) -> str:
        """The judged value's column: `last/<metric>` or `best/<metric>`."""
        return f"{self.epoch}/{self.metric}"

    @property
    def words(self) -> str:
        """The judging rule as the tables name it."""
        return JUDGE_EPOCHS[self.epoch]

    def judged_epoch(self, history: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The epoch of `history` (a cell's epochs) it is judged and tested at: the last, or
        the best (`best_epoch`); None when that epoch has no finite value (a last epoch that
        diverged is what training N epochs gave: no earlier epoch stands in for it)."""
        if self.epoch == "best":
            return best_epoch(history, self.metric, self.mode)
        last = history[-1] if history else {}
        value = last.get(self.metric)
        return last if value is not None and not math.isnan(value) else None


def best_epoch(history: list[dict[str, Any]], metric: str, mode: str,
               upto: int | None = None) -> dict[str, Any] | None:
    """The epoch a cell is judged and tested at: its best by the grid's metric among epochs
    up to `upto`, the latest on a tie (as Tune's checkpoint retention keeps them)."""
    sign = 1 if mode == "max" else -1
    seen = [h for h in history if (upto is None or h["epoch"] <= upto)
            and h.get(metric) is not None and not math.isnan(h[metric])]
    return max(seen, key=lambda h: (sign * h[metric], h["epoch"]), default=None)
