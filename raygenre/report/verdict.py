"""A sweep's verdict: each cell's interval at its judged epoch, the winner, and which cells
(or, with seed replicates, which configurations) are tied with it within noise.

The one place where a winner is chosen and ties are judged: tables, plots, best.json, the
console and the pipeline read what this returns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raygenre.gridfile import Grid
from raygenre.report.records import TrialRecord, pick_best
from raygenre.report.tables import fmt
from raygenre.report.uncertainty import (
    METRIC_STAT,
    Split,
    TrackStats,
    describe,
    interval,
    over_replicates,
    seed_draws,
    track_stats,
)
from raygenre.train import ValPredictions

REPLICATE_KEY = "seed"  # configurations that differ only in it are replicates of one


class ReportError(RuntimeError):
    """The stored predictions disagree with the metrics they came with."""


@dataclass
class Candidate:
    """One configuration of a sweep: its replicates (cells that differ only in seed; one
    without replicates) and their aggregate."""

    label: str
    cells: list[dict[str, Any]]
    value: float | None = None  # the objective's mean over replicates at their judged epochs
    std: float | None = None
    lo: float | None = None
    hi: float | None = None
    diff_lo: float | None = None  # winner minus this, better-positive
    diff_hi: float | None = None
    tied: bool | None = None  # None for the winner
    draws: np.ndarray | None = field(default=None, repr=False)

    def row(self, grid: Grid) -> dict[str, Any]:
        first = self.cells[0]
        keys = [k for k in grid.labels if k != REPLICATE_KEY]
        col = grid.objective.best_column
        return {"config": self.label, **{k: first[k] for k in keys},
                "replicates": len(self.cells),
                "cells": " ".join(t["cell_id"] for t in self.cells),
                f"mean {col}": self.value, f"std {col}": self.std, "ci_lo": self.lo,
                "ci_hi": self.hi, "tied_with_best": self.tied, "diff_lo": self.diff_lo,
                "diff_hi": self.diff_hi}


@dataclass
class Verdict:
    best: dict[str, Any]  # the winning configuration's first replicate (its cell row)
    chosen: list[dict[str, Any]]  # every replicate of the winning configuration
    configs: list[Candidate]  # best first
    replicates: bool

    @property
    def winner(self) -> Candidate:
        return self.configs[0]

    @property
    def tied(self) -> list[Candidate]:
        return [c for c in self.configs[1:] if c.tied]

    def line(self, metric: str) -> str:
        """The sweep's verdict in words, as the console, summary.md and index.html say it."""
        w = self.winner
        what = f"mean over {len(w.cells)} seeds" if self.replicates else metric
        head = f"best {w.label}: {what} {describe(w.value, w.lo, w.hi)}"
        if any(c.tied is None for c in self.configs[1:]):
            head += " (some cells have no stored predictions: not judged)"
        tied = self.tied
        if not tied:
            return head + "; no other configuration within noise"
        return head + f"; tied within noise: {'; '.join(c.label for c in tied)}"


def config_label(cell: dict[str, Any], grid: Grid) -> str:
    keys = [k for k in grid.labels if k != REPLICATE_KEY]
    return " ".join(f"{k}={fmt(cell[k])}" for k in keys) or "the base config"


def judge(cells: list[dict[str, Any]], grid: Grid, val: Split,
          predictions: Callable[[TrialRecord], ValPredictions]) -> Verdict | None:
    """Intervals on every cell row (in place), the winner, and the ties; None when no cell
    has a value of the objective."""
    objective = grid.objective
    col, sign = objective.best_column, (1 if objective.mode == "max" else -1)
    stat = METRIC_STAT.get(objective.metric)
    weights = val.draws()
    records: dict[str, ValPredictions] = {}
    stats: dict[str, TrackStats] = {}
    for t in cells:
        t.update({f"{col} ci_lo": None, f"{col} ci_hi": None, "judged val/acc": None,
                  "val/acc ci_lo": None, "val/acc ci_hi": None, "judged val/track_acc": None,
                  "val/track_acc ci_lo": None, "val/track_acc ci_hi": None,
                  "tied_with_best": None, "diff_lo": None, "diff_hi": None})
        if t["best_epoch"] is None:
            continue
        trial: TrialRecord = t["_trial"]
        if trial.trial_id not in records:
            records[trial.trial_id] = predictions(trial)
        logp = records[trial.trial_id].by_epoch.get(t["best_epoch"])
        if logp is None:
            continue
        s = stats[t["cell_id"]] = track_stats(logp, val)
        _check(t, s, objective.metric, trial)
        for name, key in (("acc", "val/acc"), ("track_acc", "val/track_acc")):
            t[f"judged {key}"] = s.value(name)
            t[f"{key} ci_lo"], t[f"{key} ci_hi"] = interval(s.draws(weights, name))
        if stat is not None:
            t[f"{col} ci_lo"], t[f"{col} ci_hi"] = interval(s.draws(weights, stat))

    groups: dict[str, list[dict[str, Any]]] = {}
    for t in cells:
        if t[col] is not None and not math.isnan(t[col]):
            groups.setdefault(config_label(t, grid), []).append(t)
    if not groups:
        return None
    replicates = REPLICATE_KEY in grid.labels
    configs = []
    for label, members in groups.items():
        # Replicates in seed order: the seed bootstrap picks them by position, and a resumed
        # sweep may list its cells in another order than an uninterrupted one.
        members.sort(key=lambda t: (t.get(REPLICATE_KEY) is None, t.get(REPLICATE_KEY) or 0))
        values = np.array([t[col] for t in members], dtype=np.float64)
        c = Candidate(label, members, float(values.mean()),
                   float(values.std(ddof=1)) if len(values) > 1 else 0.0)
        if stat is not None and all(t["cell_id"] in stats for t in members):
            picks = seed_draws(len(members), len(weights)) if replicates else None
            c.draws = over_replicates([stats[t["cell_id"]] for t in members], weights, stat,
                                      picks)
            c.lo, c.hi = interval(c.draws)
        configs.append(c)
    # The winner: the best mean; on a tie, fewer epochs (the same for less compute), then the
    # grid's order. Without replicates this is pick_best's rule on single cells.
    order = {id(t): i for i, t in enumerate(cells)}
    best_of_each = {c.label: pick_best(c.cells, objective) for c in configs}
    configs.sort(key=lambda c: (-sign * c.value, best_of_each[c.label]["epoch"],
                                order[id(c.cells[0])]))
    winner = configs[0]
    for c in configs[1:]:
        if winner.draws is not None and c.draws is not None:
            c.diff_lo, c.diff_hi = interval(sign * (winner.draws - c.draws))
            c.tied = c.diff_lo <= 0.0
    for c in configs:
        for t in c.cells:
            t["tied_with_best"] = c.tied if c is not winner else None
            t["diff_lo"], t["diff_hi"] = c.diff_lo, c.diff_hi
    best = winner.cells[0] if replicates else best_of_each[winner.label]
    return Verdict(best, winner.cells, configs, replicates)


def _check(cell: dict[str, Any], s: TrackStats, metric: str, trial: TrialRecord) -> None:
    """The stored predictions must give the accuracy the loop reported at that epoch: else they
    are not this cell's, or not in the split's order, and no interval may be drawn from them."""
    reported = next((h.get("val/acc") for h in trial.history if h["epoch"] == cell["best_epoch"]),
                    None)
    got = s.value("acc")
    if reported is not None and abs(got - reported) > 1e-9:
        raise ReportError(f"cell {cell['cell_id']}: the validation predictions stored in "
                          f"{trial.latest} give val/acc {got:.6f} at epoch {cell['best_epoch']}, "
                          f"its record says {reported:.6f}; the record is not this split's")


# What the pipeline carries to its next stage when the winner is tied: a later stage builds on
# it, and among results within noise of each other the cheaper one costs every later cell less.
CARRY_RULE = ("among the winner and the configurations tied with it, the one with the fewest "
              "epochs (a result within noise of the best for less training); on equal epochs, "
              "the best mean")


def carried_choice(verdict: Verdict, grid: Grid) -> dict[str, Any]:
    """Which configuration a pipeline carries forward, and why (best.json's `carry`)."""
    pool = [verdict.winner, *verdict.tied]
    pick = min(pool, key=lambda c: (c.cells[0]["_config"]["epochs"], pool.index(c)))
    return {"config": pick.cells[0]["_config"], "label": pick.label,
            "swept": {k: pick.cells[0][k] for k in grid.labels if k != REPLICATE_KEY},
            "is_winner": pick is verdict.winner, "rule": CARRY_RULE,
            "tied": [c.label for c in verdict.tied]}
