"""Track-level predictions from segment ones. Shared by the loop (its `val/track_acc`) and the
report (test scores, intervals): the report imports the loop, so this cannot live in either."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch


def track_groups(tracks: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """Each track's segment indices, tracks in order of first appearance."""
    by_track: dict[Hashable, list[int]] = {}
    for i, t in enumerate(tracks):
        by_track.setdefault(t, []).append(i)
    return by_track


def track_votes(probs: torch.Tensor, tracks: Sequence[Hashable]) -> dict[Hashable, int]:
    """Each track's predicted class: the majority of its segments' predictions; a tie goes to
    the tied class with the most total probability over the track's segments (`_vote`)."""
    number: dict[Hashable, int] = {}
    rows = torch.tensor([number.setdefault(t, len(number)) for t in tracks])
    labels = torch.zeros(len(tracks), dtype=torch.long)  # unused by the vote
    picks = _vote(track_tally(probs, labels, rows, len(number)))
    return dict(zip(number, picks.tolist(), strict=True))


def track_tally(probs: torch.Tensor, labels: torch.Tensor, tracks: torch.Tensor,
                num_tracks: int) -> torch.Tensor:
    """Per track number (0 .. num_tracks-1) and class: segments voting for it, their summed
    probability of it, segments labelled with it; float64, (num_tracks, 3, classes).

    Every entry is a sum over segments, so the tallies of any partition of a split add up to
    the split's: data-parallel workers, each holding a shard, all-reduce theirs and vote on the
    total (`tally_accuracy`), as one process holding every segment would."""
    classes = probs.shape[1]
    tally = torch.zeros(num_tracks, 3, classes, dtype=torch.float64)
    rows = tracks.long()
    one_hot = torch.nn.functional.one_hot
    tally[:, 0].index_add_(0, rows, one_hot(probs.argmax(1), classes).double())
    tally[:, 1].index_add_(0, rows, probs.double())
    tally[:, 2].index_add_(0, rows, one_hot(labels.long(), classes).double())
    return tally


def tally_accuracy(tally: torch.Tensor) -> float:
    """The share of tracks whose vote is their label, from `track_tally`'s sums: the majority of
    the segments' predictions, a tie to the tied class with the most summed probability."""
    tally = tally[tally[:, 2].sum(1) > 0]  # track numbers no segment carried
    return float((_vote(tally) == tally[:, 2].argmax(1)).double().mean())


def _vote(tally: torch.Tensor) -> torch.Tensor:
    """Each tallied track's class: the most votes, a tie to the most summed probability. The
    one place the rule lives: the loop's val/track_acc and the report's votes both use it."""
    votes, mass = tally[:, 0], tally[:, 1]
    tied = votes == votes.max(1, keepdim=True).values
    return torch.where(tied, mass, torch.full_like(mass, -1.0)).argmax(1)
