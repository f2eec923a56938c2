"""`val/track_acc` as a grid objective: loaded, reported by the loop each epoch, and equal to a
vote computed here from the stored validation predictions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from raygenre.config import Config
from raygenre.data.prepared import read_split, split_batches
from raygenre.data.sets import prepare
from raygenre.grid.file import load_grid
from raygenre.report.uncertainty import METRIC_STAT
from raygenre.sweep.feed import _with_track_numbers
from raygenre.training.builder import Runtime
from raygenre.training.checkpoints import PREDICTIONS_FILE
from raygenre.training.loop import LocalSeam, train_loop
from raygenre.training.votes import tally_accuracy, track_tally

from .conftest import write_clip


def test_a_grid_may_select_on_track_accuracy(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text("description: d\nmetric: val/track_acc\n"
                                     "base: {model: mlp}\ngrid: {lr: [0.01, 0.001]}\n")
    g = load_grid(str(tmp_path / "g.yaml"))
    assert (g.metric, g.mode) == ("val/track_acc", "max")
    assert METRIC_STAT["val/track_acc"] == "track_acc"


def _data(length: int) -> dict:
    """3 classes; validation: 10 tracks of 3 segments, each track one class, labels in x."""
    g = torch.Generator().manual_seed(3)
    train_y = torch.randint(0, 3, (48,), generator=g)
    val_track = torch.arange(30) // 3
    val_y = val_track % 3

    def signal(y: torch.Tensor) -> torch.Tensor:  # faint: the votes must not all agree
        hint = torch.nn.functional.one_hot(y, 3).float().repeat_interleave(length // 3, 1)
        hint = torch.nn.functional.pad(hint, (0, length - hint.shape[1]))
        return torch.randn(len(y), length, generator=g) + 0.7 * hint

    return {"train": (signal(train_y), train_y), "val": (signal(val_y), val_y, val_track)}


def _vote(logp: np.ndarray, labels: torch.Tensor, tracks: torch.Tensor) -> float:
    """Majority of the segments' argmax per track, a tie to the most summed probability."""
    right = []
    for t in tracks.unique().tolist():
        rows = np.flatnonzero(tracks.numpy() == t)
        count = Counter(logp[rows].argmax(1).tolist())
        top = max(count.values())
        mass = np.exp(logp[rows]).sum(0)
        pick = max((c for c, n in count.items() if n == top), key=lambda c: mass[c])
        right.append(pick == int(labels[rows[0]]))
    return sum(right) / len(right)


@pytest.mark.parametrize("features, length", [("waveform", 64), ("spectrogram", 2048)])
def test_the_loop_reports_track_accuracy_each_epoch_from_its_predictions(
        tmp_path: Path, features: str, length: int) -> None:
    """Per batch (waveform) and from features held per segment (spectrogram)."""
    data = _data(length)
    cfg = Config(model="mlp", features=features, hidden=(16,), lr=3e-3, batch_size=8,
                 epochs=3)
    runtime = Runtime(num_classes=3, segment_samples=length, threads=1)
    seam = LocalSeam(data, tmp_path)
    train_loop(cfg, runtime, seam)
    with np.load(tmp_path / "epoch_0003" / PREDICTIONS_FILE) as f:
        logp = dict(zip(f["epochs"].tolist(), f["logp"], strict=True))
    _, labels, tracks = data["val"]
    assert [r["epoch"] for r in seam.reports] == [1, 2, 3]
    for r in seam.reports:
        assert r["val/track_acc"] == _vote(logp[r["epoch"]], labels, tracks)

    untracked = LocalSeam({"train": data["train"], "val": data["val"][:2]}, tmp_path / "u")
    train_loop(cfg, runtime, untracked)  # a seam that names no tracks: the metric is left out
    assert all("val/track_acc" not in r for r in untracked.reports)


def test_a_sweeps_validation_batches_number_each_segments_track(tmp_path: Path) -> None:
    """What the Ray seams' val batches carry ("track", as numbers: tensors hold no strings)."""
    for g in ("a", "b"):
        for k in range(4):
            write_clip(tmp_path / "d" / g / f"{k}.wav", 11.0, seed=k)  # 2 segments a track
    p = prepare(tmp_path / "d", tmp_path / "cache", Config(), log=lambda _: None)
    tables = [pa.Table.from_batches([b])
              for b in split_batches(p, "val", rows=3, columns=["x", "label", "track"])]
    numbered = list(_with_track_numbers(tables))
    got = [n for t in numbered for n in t.column("track").to_pylist()]
    names = read_split(p, "val").column("track").to_pylist()
    first = list(dict.fromkeys(names))
    assert got == [first.index(n) for n in names] and len(first) >= 2


def test_shards_tallies_add_up_to_the_whole_splits_vote() -> None:
    """Data-parallel workers each hold a shard, a track's segments split between them: the
    summed tallies vote as one process holding every segment (checked against `_vote`)."""
    g = torch.Generator().manual_seed(5)
    tracks = torch.arange(40) // 4  # 10 tracks of 4 segments: 2-2 vote ties happen
    labels = tracks % 3
    logp = torch.log_softmax(torch.randn(40, 3, generator=g), 1)
    whole = _vote(logp.numpy(), labels, tracks)
    assert 0 < whole < 1
    order = torch.randperm(40, generator=g)
    shards = [order[:13], order[13:31], order[31:]]  # unequal, tracks cut across
    total = sum(track_tally(logp[s].exp(), labels[s], tracks[s], 10) for s in shards)
    assert tally_accuracy(total) == whole
    one = tally_accuracy(track_tally(logp[shards[0]].exp(), labels[shards[0]],
                                     tracks[shards[0]], 10))
    assert one != whole  # a shard alone would report its own figure, not the split's
