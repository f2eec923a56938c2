"""Figures pooled over several splits and training seeds (raygenre.tools.fresh_splits: the
same recipes on fresh splits): a recipe's error as the mean over splits of its mean over seeds,
with a t interval whose variance adds the tracks' (a paired, stratified bootstrap per split) and
the seeds' (each split's seed spread), and the error ratio of two recipes on the log scale."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from raygenre.report.uncertainty import DRAWS, Split, TrackStats, t_half_width


@dataclass(frozen=True)
class Errors:
    """A recipe's error (1 - a statistic) over splits and seeds, in the parts its interval
    needs."""

    value: float  # mean over splits of each split's mean over its seeds
    track_draws: np.ndarray  # (draws,) the same on each track draw, every seed kept
    seed_parts: list[tuple[float, float]]  # per split: (variance its seeds add, their df)
    track_df: float  # the tracks' degrees of freedom, summed over splits


def errors_of(splits: list[tuple[Split, int, list[TrackStats]]], stat: str,
              n: int = DRAWS) -> Errors:
    """A recipe's error from `splits`: each split, the seed of its track draws (give every
    recipe the same, so that they are paired) and the recipe's models on it, one per training
    seed. With the tracks' bootstrap draws and each split's seed spread (s^2 over its seeds /
    seeds / splits^2).

    Why not resample the seeds: with 2 seeds a split, a plain bootstrap of them shrinks their
    variance by half and its draws take two values only; Rao-Wu rescaling mends the variance
    but not the tails (still two values, where a mean of 2 needs t at 1 df, 12.7, not 1.96).
    A t interval whose seed part is estimated from the seeds' own spread, with Satterthwaite's
    df for the sum, is the standard answer for so few (tests/test_fresh_splits.py measures
    both by simulation)."""
    k = len(splits)
    value, draws, parts = 0.0, np.zeros(n), []
    for split, draw_seed, seeds in splits:
        weights = split.draws(n, draw_seed)
        own = np.array([1.0 - s.value(stat) for s in seeds])
        value += float(own.mean()) / k
        draws += (1.0 - np.stack([s.draws(weights, stat) for s in seeds], axis=1).mean(1)) / k
        if len(own) > 1:
            parts.append((float(np.var(own, ddof=1)) / len(own) / k ** 2, len(own) - 1))
    return Errors(value, draws, parts, sum(max(split.track_df, 1) for split, _, _ in splits))


def accuracy_interval(e: Errors) -> tuple[float, float, float]:
    """1 - error, with its LEVEL t interval (tracks' variance plus the seeds')."""
    half = t_half_width([(float(np.var(e.track_draws, ddof=1)), e.track_df), *e.seed_parts])
    acc = 1.0 - e.value
    return acc, max(acc - half, 0.0), min(acc + half, 1.0)


def ratio_interval(a: Errors, ref: Errors) -> tuple[float, float | None, float | None]:
    """a's errors over ref's, with a LEVEL interval on the log scale (a ratio is skewed and
    positive: the delta method for log(a/ref), as for a risk ratio). Var(log ratio) is
    Var(a - ratio*ref) / a^2: the tracks' part from the paired draws, and each recipe's seed
    parts, the two recipes' seeds taken as independent trainings (one seed
    number shares the batch order, a positive correlation that this leaves out, so the
    interval errs wide). None for the ends where either recipe made no error."""
    if ref.value == 0:
        return (1.0 if a.value == 0 else math.inf), None, None
    ratio = a.value / ref.value
    if a.value == 0:
        return ratio, None, None
    paired = a.track_draws - ratio * ref.track_draws
    half = t_half_width([(float(np.var(paired, ddof=1)), a.track_df), *a.seed_parts,
                         *((ratio ** 2 * v, df) for v, df in ref.seed_parts)]) / a.value
    return ratio, ratio * math.exp(-half), ratio * math.exp(half)
