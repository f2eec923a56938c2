"""A sweep's verdict: each cell's interval at its judged epoch, the winner, its value once the
choice is priced in, and which cells (or, with seed replicates, which configurations) cannot be
told from it.

The one place where a winner is chosen and ties are judged: tables, plots, best.json, the
console and the pipeline read what this returns. Every choice the sweep makes on validation
is made again in every bootstrap draw (uncertainty.selection): each cell's epoch under early
stopping (`judge_epoch: best`), then the winner among all configurations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raygenre.grid.file import Grid
from raygenre.report.records import TrialRecord, pick_best
from raygenre.report.tables import fmt
from raygenre.report.uncertainty import (
    METRIC_STAT,
    Split,
    TrackStats,
    describe,
    interval,
    out_of_bag,
    pick_epochs,
    seed_interval,
    selection,
    track_stats,
)
from raygenre.training.checkpoints import ValPredictions

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
    p_best: float | None = None  # share of draws in which it is chosen (descriptive)
    gap: float | None = None  # the winner's value minus this, better-positive
    gap_lo: float | None = None  # its lower bound with the choice priced in: <= 0 is tied
    tied: bool | None = None  # None for the winner
    draws: np.ndarray | None = field(default=None, repr=False)  # on each draw's tracks
    left_out: np.ndarray | None = field(default=None, repr=False)  # on the tracks left out

    def row(self, grid: Grid) -> dict[str, Any]:
        first = self.cells[0]
        keys = [k for k in grid.labels if k != REPLICATE_KEY]
        col = grid.objective.column
        return {"config": self.label, **{k: first[k] for k in keys},
                "replicates": len(self.cells),
                "cells": " ".join(t["cell_id"] for t in self.cells),
                "judged_at": grid.objective.words,
                f"mean {col}": self.value, f"std {col}": self.std, "ci_lo": self.lo,
                "ci_hi": self.hi, "p_best": self.p_best, "tied_with_best": self.tied,
                "gap": self.gap, "gap_lo": self.gap_lo}


@dataclass(frozen=True)
class Estimate:
    """The winner's value with its choice priced in (uncertainty.selection): the mean over
    draws of each draw's re-chosen winner on the tracks it left out."""

    value: float
    lo: float
    hi: float
    mc_error: float  # the Monte Carlo standard error of `value` over the draws
    among: int  # configurations chosen among

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "low": self.lo, "high": self.hi,
                "mc_error": self.mc_error, "among": self.among,
                "method": "bootstrap bias-corrected: the winner re-chosen on each draw's "
                          "tracks, scored on the tracks that draw left out (Tsamardinos et al. "
                          "2018)"}


@dataclass
class Verdict:
    best: dict[str, Any]  # the winning configuration's first replicate (its cell row)
    chosen: list[dict[str, Any]]  # every replicate of the winning configuration
    configs: list[Candidate]  # best first
    replicates: bool
    judged_at: str = "last epoch"  # Objective.words
    estimate: Estimate | None = None

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
        head = (f"best {w.label}: {what} at {self.judged_at} {describe(w.value, w.lo, w.hi)}"
                + (f", P(best) {w.p_best:.2f}" if w.p_best is not None else ""))
        if self.estimate is not None and self.estimate.among > 1:
            e = self.estimate
            head += (f"; chosen among {e.among}, on tracks not used to choose it: "
                     f"{describe(e.value, e.lo, e.hi)}")
        if any(c.tied is None for c in self.configs[1:]):
            head += " (some cells have no stored predictions: not judged)"
        tied = self.tied
        if not tied:
            return head + "; no other configuration within noise"
        return head + f"; tied within noise: {'; '.join(c.label for c in tied)}"


def config_label(cell: dict[str, Any], grid: Grid) -> str:
    keys = [k for k in grid.labels if k != REPLICATE_KEY]
    return " ".join(f"{k}={fmt(cell[k])}" for k in keys) or "the base config"


_CELL_KEYS = ("judged val/acc", "val/acc ci_lo", "val/acc ci_hi", "judged val/track_acc",
              "val/track_acc ci_lo", "val/track_acc ci_hi", "p_best", "tied_with_best", "gap",
              "gap_lo")


def judge(cells: list[dict[str, Any]], grid: Grid, val: Split,
          predictions: Callable[[TrialRecord], ValPredictions]) -> Verdict | None:
    """Intervals on every cell row (in place), the winner, and the ties; None when no cell
    has a value of the objective."""
    objective = grid.objective
    col, sign = objective.column, (1 if objective.mode == "max" else -1)
    inside, outside = _cell_draws(cells, grid, val, predictions)
    groups: dict[str, list[dict[str, Any]]] = {}
    for t in cells:
        if t[col] is not None and not math.isnan(t[col]):
            groups.setdefault(config_label(t, grid), []).append(t)
    if not groups:
        return None
    replicates = grid.replicates > 1  # a `seed: [0]` axis is one seed, not replicates
    configs = [_candidate(label, members, col, val, inside, outside)
               for label, members in groups.items()]
    # The winner: the best mean; on a tie, fewer epochs (the same for less compute), then the
    # grid's order. Without replicates this is pick_best's rule on single cells. The same
    # rule breaks ties within a draw.
    order = {id(t): i for i, t in enumerate(cells)}
    best_of_each = {c.label: pick_best(c.cells, objective) for c in configs}

    def rule(c: Candidate) -> tuple[int, int]:
        return best_of_each[c.label]["epoch"], order[id(c.cells[0])]

    configs.sort(key=lambda c: (-sign * c.value, *rule(c)))
    winner = configs[0]
    estimate = _choose(configs, rule, sign) if winner.draws is not None else None
    for c in configs:
        for t in c.cells:
            t["tied_with_best"] = c.tied if c is not winner else None
            t["p_best"], t["gap"], t["gap_lo"] = c.p_best, c.gap, c.gap_lo
    best = winner.cells[0] if replicates else best_of_each[winner.label]
    return Verdict(best, winner.cells, configs, replicates, objective.words, estimate)


def _cell_draws(cells: list[dict[str, Any]], grid: Grid, val: Split,
                predictions: Callable[[TrialRecord], ValPredictions]
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each cell's intervals on its row (in place), and its objective on each draw's tracks
    and on the tracks each draw left out (by cell id), at the epoch it is judged at (under
    early stopping, re-picked in each draw)."""
    objective = grid.objective
    col, sign = objective.column, (1 if objective.mode == "max" else -1)
    stat = METRIC_STAT.get(objective.metric)
    early = objective.epoch == "best"
    weights = val.draws()
    left = out_of_bag(weights)
    rows = np.arange(len(weights))
    records: dict[str, ValPredictions] = {}
    per_epoch: dict[tuple[str, int], TrackStats | None] = {}
    drawn: dict[tuple[str, int, str, bool], np.ndarray] = {}
    inside: dict[str, np.ndarray] = {}  # cell id -> the objective on each draw's tracks
    outside: dict[str, np.ndarray] = {}  # ... on the tracks each draw left out

    def stats_at(trial: TrialRecord, epoch: int) -> TrackStats | None:
        key = (trial.trial_id, epoch)
        if key not in per_epoch:
            if trial.trial_id not in records:
                records[trial.trial_id] = predictions(trial)
            logp = records[trial.trial_id].by_epoch.get(epoch)
            per_epoch[key] = None if logp is None else track_stats(logp, val)
        return per_epoch[key]

    def draws_at(trial: TrialRecord, epochs: list[int], name: str, out: bool) -> np.ndarray:
        """(draws, epochs): `name` at each epoch, on each draw's tracks or those it left out.
        Cells of one trial share their epochs' draws."""
        cols = []
        for e in epochs:
            key = (trial.trial_id, e, name, out)
            if key not in drawn:
                drawn[key] = stats_at(trial, e).draws(left if out else weights, name)
            cols.append(drawn[key])
        return np.stack(cols, axis=1)

    for t in cells:
        t.update({f"{col} ci_lo": None, f"{col} ci_hi": None, **dict.fromkeys(_CELL_KEYS)})
        if t["judged_epoch"] is None:
            continue
        trial: TrialRecord = t["_trial"]
        # Under early stopping every epoch the cell ran is a candidate, re-picked per draw.
        epochs = ([h["epoch"] for h in trial.history if h["epoch"] <= t["epoch"]
                   and h.get(objective.metric) is not None
                   and not math.isnan(h[objective.metric])] if early else [t["judged_epoch"]])
        if any(stats_at(trial, e) is None for e in epochs):
            continue
        s = stats_at(trial, t["judged_epoch"])
        _check(t, s, objective.metric, trial)
        if stat is not None and early:
            pick = pick_epochs(draws_at(trial, epochs, stat, False), sign)
        else:
            pick = np.full(len(weights), epochs.index(t["judged_epoch"]))
        for name, key in (("acc", "val/acc"), ("track_acc", "val/track_acc")):
            t[f"judged {key}"] = s.value(name)
            t[f"{key} ci_lo"], t[f"{key} ci_hi"] = interval(
                draws_at(trial, epochs, name, False)[rows, pick])
        if stat is not None:
            inside[t["cell_id"]] = draws_at(trial, epochs, stat, False)[rows, pick]
            outside[t["cell_id"]] = draws_at(trial, epochs, stat, True)[rows, pick]
            t[f"{col} ci_lo"], t[f"{col} ci_hi"] = interval(inside[t["cell_id"]])
    return inside, outside


def _candidate(label: str, members: list[dict[str, Any]], col: str, val: Split,
               inside: dict[str, np.ndarray], outside: dict[str, np.ndarray]) -> Candidate:
    """One configuration: its cells (one per seed), mean, spread and interval."""
    # Replicates in seed order, so that a resumed sweep, which may list its cells in
    # another order, gives the same aggregates bit for bit.
    members.sort(key=lambda t: (t.get(REPLICATE_KEY) is None, t.get(REPLICATE_KEY) or 0))
    values = np.array([t[col] for t in members], dtype=np.float64)
    c = Candidate(label, members, float(values.mean()),
                  float(values.std(ddof=1)) if len(values) > 1 else 0.0)
    if all(t["cell_id"] in inside for t in members):
        per_seed = np.stack([inside[t["cell_id"]] for t in members], axis=1)
        c.draws = per_seed.mean(1)
        c.left_out = np.stack([outside[t["cell_id"]] for t in members], axis=1).mean(1)
        if len(members) > 1:
            c.lo, c.hi = seed_interval(values, per_seed, val.track_df)
        else:
            c.lo, c.hi = interval(c.draws)
    return c


def _choose(configs: list[Candidate], rule: Callable[[Candidate], tuple[int, int]],
            sign: int) -> Estimate:
    """The choice re-run in every draw among the configurations with draws (`selection`):
    their P(best), gaps and ties (in place), and the winner's value on left-out tracks."""
    winner = configs[0]
    judged = [c for c in configs if c.draws is not None]
    ranks = {id(c): i for i, c in enumerate(sorted(judged, key=rule))}
    sel = selection(sign * np.array([c.value for c in judged]),
                    sign * np.stack([c.draws for c in judged], axis=1),
                    sign * np.stack([c.left_out for c in judged], axis=1),
                    np.array([ranks[id(c)] for c in judged]))
    for i, c in enumerate(judged):
        c.p_best = float(sel.p_best[i])
        c.gap, c.gap_lo = float(sel.gap[i]), float(sel.gap_lo[i])
        c.tied = bool(sel.held[i]) if c is not winner else None
    scores = sign * sel.winner_draws
    lo, hi = interval(scores)
    return Estimate(float(scores.mean()), lo, hi,
                    float(scores.std(ddof=1) / math.sqrt(len(scores))), len(judged))


def _check(cell: dict[str, Any], s: TrackStats, metric: str, trial: TrialRecord) -> None:
    """The stored predictions must give the accuracy the loop reported at that epoch: else they
    are not this cell's, or not in the split's order, and no interval may be drawn from them."""
    epoch = cell["judged_epoch"]
    reported = next((h.get("val/acc") for h in trial.history if h["epoch"] == epoch), None)
    got = s.value("acc")
    if reported is not None and abs(got - reported) > 1e-9:
        raise ReportError(f"cell {cell['cell_id']}: the validation predictions stored in "
                          f"{trial.latest} give val/acc {got:.6f} at epoch {epoch}, "
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
