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
intervals on any machine. Two cells are *tied* when the interval of their difference holds 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from raygenre.votes import track_votes

# 2 000 draws put the Monte Carlo error of a 2.5 % tail near 0.003 in accuracy on a 20-track
# split, well under one track's 0.05; they cost ~10 ms per cell here.
DRAWS = 2000
LEVEL = 0.95
SEED = 2015  # fixed, so the intervals are a function of the predictions alone
METHOD = (f"percentile bootstrap over tracks, stratified by class (Rao-Wu rescaled), {DRAWS} "
          f"draws, seed {SEED}, {LEVEL:.0%}; ties: paired bootstrap (the same draws for both), "
          f"tied when the difference's interval holds 0")

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
