"""How sure a sweep's figures are: bootstrap intervals over a split's tracks, paired
comparisons with the winner, and aggregates over seed replicates.

The unit resampled is the track, not the segment: a track's six segments share its key, tempo
and instruments, so they are not independent draws, and resampling segments would give
intervals too narrow (by up to the square root of six, were a track's segments alike). Each
draw keeps every class's share of tracks (stratified, as the split itself is; see
`Split.draws`), and every cell is scored on the same draws, so a difference between two cells
is judged on the same resampled tracks (a paired bootstrap): what varies is the tracks, not
which draw each cell got.

Percentile intervals at LEVEL from DRAWS draws, seeded: the same predictions give the same
intervals on any machine.

Choosing is part of what is resampled (`selection`): in every draw the winner is chosen again
among all configurations on the drawn tracks (and, under early stopping, each cell's epoch
first), which gives each configuration's share of wins (descriptive), the winner's value
scored on the tracks that draw left out (not inflated by the choice), and which configurations
cannot be told from the best. Seed replicates get a t interval over seed means with the
tracks' variance added (`seed_interval`): 2 or 3 seeds are too few to resample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from raygenre.training.votes import track_votes

# 2 000 draws put the Monte Carlo error of a 2.5 % tail near 0.003 in accuracy on a 20-track
# split, well under one track's 0.05; they cost ~10 ms per cell here.
DRAWS = 2000
LEVEL = 0.95
SEED = 2015  # fixed, so the intervals are a function of the predictions alone
METHOD = (f"percentile bootstrap over tracks, stratified by class (Rao-Wu rescaled), {DRAWS} "
          f"draws, seed {SEED}, {LEVEL:.0%}; the winner re-chosen in every draw (P(best): the "
          f"share of draws it wins, descriptive); the winner's value scored on each draw's "
          f"left-out tracks (bootstrap bias-corrected, Tsamardinos et al. 2018); tied: within "
          f"the {LEVEL:.0%} bound of the re-chosen winner's lead (multiple comparisons with the "
          f"best, Hsu 1984); seeds: t interval over seed means plus the tracks' variance "
          f"(Satterthwaite df)")

# What each bootstrappable metric is, on a split's predictions.
STATS = {"acc": "segment accuracy", "loss": "mean cross-entropy", "track_acc":
         "track accuracy (majority vote of a track's segments)"}
METRIC_STAT = {"val/acc": "acc", "val/loss": "loss", "val/track_acc": "track_acc"}


@dataclass(frozen=True)
class Split:
    """What the bootstrap needs of a split: each segment's label and track, in file order."""

    labels: np.ndarray  # (segments,)
    track_of: np.ndarray  # (segments,) index into tracks
    tracks: tuple[str, ...]
    track_class: np.ndarray  # (tracks,)

    @classmethod
    def of(cls, labels: list[int] | np.ndarray, tracks: list[str]) -> Split:
        names = tuple(dict.fromkeys(tracks))
        index = {t: i for i, t in enumerate(names)}
        labels = np.asarray(labels, dtype=np.int64)
        track_of = np.array([index[t] for t in tracks], dtype=np.int64)
        track_class = np.zeros(len(names), dtype=np.int64)
        track_class[track_of] = labels
        return cls(labels, track_of, names, track_class)

    def strata(self) -> list[np.ndarray]:
        """Groups of tracks resampled within themselves: each class with two tracks or more,
        and the tracks of one-track classes together (a class of one track alone would never
        vary: a smoke sample's split has one validation track per class)."""
        classes = [np.flatnonzero(self.track_class == c) for c in np.unique(self.track_class)]
        single = [m for m in classes if len(m) == 1]
        return [m for m in classes if len(m) > 1] + ([np.concatenate(single)] if single else [])

    @property
    def track_df(self) -> int:
        """Degrees of freedom of a mean over tracks stratified as `strata`: tracks less one per
        stratum (a one-track class is pooled, not a stratum of its own)."""
        return sum(len(m) - 1 for m in self.strata())

    def draws(self, n: int = DRAWS, seed: int = SEED) -> np.ndarray:
        """(n, tracks) weights, one row per draw: Rao and Wu's rescaled bootstrap in each
        stratum (draw k-1 of its k tracks with replacement, weigh each draw k/(k-1)). A plain
        bootstrap of k tracks shrinks the variance by (k-1)/k, by half at the built-in split's
        two validation tracks per class; the rescaling undoes that, and every stratum keeps its
        total weight k, so the classes keep their shares."""
        rng = np.random.default_rng(seed)
        weights = np.ones((n, len(self.tracks)), dtype=np.float64)
        for members in self.strata():
            k = len(members)
            if k < 2:
                continue  # one track: nothing to resample it with
            picks = rng.integers(0, k, size=(n, k - 1))
            weights[:, members] = (picks[:, :, None] == np.arange(k)).sum(1) * (k / (k - 1))
        return weights


@dataclass(frozen=True)
class TrackStats:
    """One model's predictions on a split, summed per track: every statistic of a draw is a
    ratio of weighted sums of these."""

    correct: np.ndarray  # right segments per track
    loss: np.ndarray  # summed cross-entropy per track
    voted: np.ndarray  # 1 where the track's vote is right
    segments: np.ndarray

    def value(self, stat: str) -> float:
        return float(self.draws(np.ones((1, len(self.segments))), stat)[0])

    def draws(self, weights: np.ndarray, stat: str) -> np.ndarray:
        """The statistic on each draw (rows of `weights`, counts per track)."""
        if stat == "track_acc":
            return weights @ self.voted / weights.sum(1)
        num = self.correct if stat == "acc" else self.loss
        return weights @ num / (weights @ self.segments)


def track_stats(logp: np.ndarray | torch.Tensor, split: Split) -> TrackStats:
    """Per-track sums of `logp` (segments x classes log-probabilities) on `split`."""
    logp = torch.as_tensor(np.asarray(logp, dtype=np.float32))
    if logp.shape[0] != len(split.labels):
        raise ValueError(f"{logp.shape[0]} predictions for a split of {len(split.labels)} "
                         f"segments")
    labels = torch.from_numpy(split.labels)
    n = len(split.tracks)
    correct = (logp.argmax(1) == labels).double().numpy()
    loss = (-logp.double().gather(1, labels[:, None])[:, 0]).numpy()
    votes = track_votes(logp.exp(), [split.tracks[i] for i in split.track_of])
    voted = np.array([votes[t] == split.track_class[i] for i, t in enumerate(split.tracks)],
                     dtype=np.float64)
    return TrackStats(np.bincount(split.track_of, correct, n), np.bincount(split.track_of, loss, n),
                      voted, np.bincount(split.track_of, minlength=n).astype(np.float64))


def interval(draws: np.ndarray) -> tuple[float, float]:
    # A ratio's draws can be infinite (a draw on which the reference makes no error): there
    # the ends are draws themselves, since interpolating towards inf gives nan.
    method = "linear" if np.isfinite(draws).all() else "inverted_cdf"
    lo, hi = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], method=method)
    return float(lo), float(hi)


def seed_draws(replicates: int, n: int = DRAWS, seed: int = SEED) -> np.ndarray:
    """(n, replicates) indices: which replicates (seeds) each draw takes, with replacement."""
    return np.random.default_rng([seed, replicates]).integers(0, replicates, (n, replicates))


def over_replicates(stats: list[TrackStats], weights: np.ndarray, stat: str,
                    picks: np.ndarray | None = None) -> np.ndarray:
    """A configuration's statistic on each draw, over its replicates: the mean over the
    replicates `picks` draws (seeds resampled too), on that draw's tracks. Without `picks`,
    the plain mean (seeds held fixed)."""
    per = np.stack([s.draws(weights, stat) for s in stats], axis=1)  # (draws, replicates)
    if picks is None:
        return per.mean(1)
    return np.take_along_axis(per, picks, axis=1).mean(1)


def describe(value: float, lo: float | None, hi: float | None) -> str:
    """`0.758 [0.683, 0.825]`, or the value alone where no interval could be made."""
    if lo is None or hi is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def out_of_bag(weights: np.ndarray) -> np.ndarray:
    """Weights of the tracks each draw left out (1 where a draw's weight is 0). Rao-Wu draws
    k-1 of a stratum's k tracks, so every stratum of two tracks or more leaves one out at
    least: no draw's left-out set is empty."""
    return (weights == 0).astype(np.float64)


def pick_epochs(draws: np.ndarray, sign: int) -> np.ndarray:
    """(draws,) column of `draws` (draws x epochs) that early stopping picks in each draw: the
    best, the latest on a tie (as `grid.objective.best_epoch`)."""
    flipped = sign * draws[:, ::-1]
    return draws.shape[1] - 1 - np.argmax(flipped, axis=1)


@dataclass(frozen=True)
class Selection:
    """What re-choosing the winner in every draw gives (`selection`)."""

    p_best: np.ndarray  # (configs,) share of draws each wins
    winner_draws: np.ndarray  # (draws,) the re-chosen winner's score on the left-out tracks
    gap: np.ndarray  # (configs,) observed best minus each, better-positive
    gap_lo: np.ndarray  # (configs,) lower LEVEL bound of it: <= 0 is tied with the best

    @property
    def held(self) -> np.ndarray:
        return self.gap_lo <= 0.0


def selection(observed: np.ndarray, in_bag: np.ndarray, left_out: np.ndarray,
              order: np.ndarray | None = None) -> Selection:
    """The choice of the best configuration, re-run in every draw. Arrays are better-positive
    (negate a loss): `observed` (configs,) on every track; `in_bag` (draws, configs) on each
    draw's resampled tracks; `left_out` (draws, configs) on the tracks that draw left out.
    `order` (configs,) ranks configurations for ties within a draw (the sweep's own rule:
    fewer epochs, then the grid's order); default: their position.

    The winner's value: the mean over draws of the draw's winner scored on its left-out tracks.
    The maximum of several noisy values is biased up by about the size of the differences
    compared (Cawley & Talbot 2010), and so is the winner's own figure and any interval drawn
    around it on the same tracks. The bootstrap bias-corrected estimate (Tsamardinos et al.
    2018, Machine Learning 107) chooses on the drawn tracks and scores on the others, so the
    score of whatever was chosen carries no selection: on configurations of equal value it is
    unbiased (tests/test_uncertainty.py), where the maximum of the same draws is not. It
    estimates what choosing this way delivers, on the 40-50 % of tracks a draw leaves out, so its
    interval is wide (conservative), and it is the value of the procedure, not of one
    configuration.

    Ties: configuration k is held with the best when its observed gap to the best is within
    the LEVEL quantile of max_j (D_j - x_j) - (D_k - x_k) over draws, the lead of each draw's
    re-chosen winner over k once every configuration's draws are centred on its observed value
    (a bootstrap form of Hsu's multiple comparisons with the best, Ann. Stat. 1984): a
    configuration as good as the best is held with probability LEVEL, however many others
    there are. A fixed winner compared pairwise holds truly equal configurations less often
    the more there are, since its lead was chosen for being large.

    P(best) is the share of draws each configuration wins: descriptive, not the probability
    that it is truly best (it favours the observed winner and splits among near-duplicates;
    Hall & Miller 2009)."""
    n, k = in_bag.shape
    rank = np.arange(k) if order is None else np.asarray(order)
    # argmax takes the first maximum: columns in tie order make it the sweep's rule.
    by_rank = np.argsort(rank, kind="stable")
    winners = by_rank[np.argmax(in_bag[:, by_rank], axis=1)]
    p_best = np.bincount(winners, minlength=k) / n
    winner_draws = left_out[np.arange(n), winners]
    centred = in_bag - observed
    lead = centred.max(1, keepdims=True) - centred  # (draws, configs), >= 0
    q = np.quantile(lead, LEVEL, axis=0)
    gap = observed.max() - observed
    return Selection(p_best, winner_draws, gap, gap - q)


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile for p > 0.5 at real-valued df > 0 (no scipy in the install):
    Newton's method on the two-sided tail P(|T| > t) = I_{df/(df+t^2)}(df/2, 1/2), kept
    inside a bracket that bisection narrows when a step would leave it."""
    tail = 2 * (1 - p)
    lo, hi = 0.0, 1.0
    while _t_tail(hi, df) > tail:
        lo, hi = hi, hi * 2
    norm = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    t = (lo + hi) / 2
    for _ in range(100):
        f = _t_tail(t, df) - tail
        lo, hi = (t, hi) if f > 0 else (lo, t)
        step = f / (2 * norm * (1 + t * t / df) ** (-(df + 1) / 2))  # d tail / dt = -2 pdf
        t = t + step if lo < t + step < hi else (lo + hi) / 2
        if abs(step) < 1e-12 * t or hi - lo < 1e-12 * hi:
            break
    return t


def _t_tail(t: float, df: float) -> float:
    return _betainc(df / 2, 0.5, df / (df + t * t))


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) (Lentz's continued fraction, as in
    Numerical Recipes' betacf)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * f / a


def seed_interval(values: np.ndarray, draws: np.ndarray, track_df: int
                  ) -> tuple[float, float]:
    """A LEVEL interval for the mean over R seeds of a statistic measured on the same tracks:
    `values` (R,) each seed's on every track, `draws` (draws, R) each seed's on the track
    bootstrap's draws, `track_df` the tracks' degrees of freedom (tracks minus strata).

    Seeds crossed with tracks: Var(mean) ~ s^2(seed values)/R + the track bootstrap's variance
    of the seed mean (Owen 2007's conservative sum: the seed x track interaction is counted in
    both), with Satterthwaite's degrees of freedom for the t quantile. A plain bootstrap over R
    seeds shrinks their variance by (R-1)/R and its percentile interval over 2 or 3 values is
    [min, max]: it covers far less than LEVEL (tests/test_uncertainty.py shows both)."""
    r = len(values)
    mean = float(np.mean(values))
    v_track = float(np.var(draws.mean(1), ddof=1))
    if r < 2:
        lo, hi = interval(draws[:, 0])
        return lo, hi
    v_seed = float(np.var(values, ddof=1)) / r
    half = t_half_width([(v_seed, r - 1), (v_track, max(track_df, 1))])
    return mean - half, mean + half


def t_half_width(parts: list[tuple[float, float]]) -> float:
    """Half the LEVEL t interval of an estimate whose variance is a sum of independent parts,
    each (variance, its degrees of freedom): t at Satterthwaite's df times the root of the sum
    (0 where every part is 0)."""
    total = sum(v for v, _ in parts)
    if total == 0:
        return 0.0
    df = total ** 2 / sum(v ** 2 / d for v, d in parts if v > 0)
    return t_quantile((1 + LEVEL) / 2, df) * math.sqrt(total)
