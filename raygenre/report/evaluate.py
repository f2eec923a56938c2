"""Test evaluation of one checkpoint: segment, track (majority vote) and per-genre accuracy."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from raygenre.data import ledger
from raygenre.data.prepared import Prepared, split_batches, to_tensor
from raygenre.storage import Location
from raygenre.training.checkpoints import load_checkpoint
from raygenre.training.loop import autocast
from raygenre.training.scratch import checkpoint_scratch
from raygenre.training.votes import track_votes


def scores(probs: torch.Tensor, labels: torch.Tensor, tracks: list[str], genres: list[str],
           split: str = "test") -> dict[str, Any]:
    """Segment accuracy, track accuracy, per-genre (segment) accuracy and the confusion matrix
    of predictions `probs` (segments x classes)."""
    pred = probs.argmax(1)
    n = len(genres)
    confusion = torch.zeros(n, n, dtype=torch.long)
    for t, p in zip(labels.tolist(), pred.tolist(), strict=True):
        confusion[t, p] += 1
    truth = {t: int(labels[i]) for i, t in enumerate(tracks)}
    votes = track_votes(probs, tracks)
    per_genre = {g: (confusion[i, i].item() / max(1, confusion[i].sum().item()))
                 for i, g in enumerate(genres)}
    return {f"{split}/acc": (pred == labels).float().mean().item(),
            f"{split}/track_acc": sum(votes[t] == truth[t] for t in votes) / len(votes),
            "n_segments": len(labels), "n_tracks": len(votes), "per_genre": per_genre,
            "confusion": confusion.tolist()}


def eval_device() -> torch.device:
    """Where the driver evaluates: its GPU when it has one. At the study's 201x552 a CPU
    takes seconds per checkpoint (a grid over 8 seeds spent ~20 s in its test evaluations on
    a 16-core GPU machine's CPU, results/bench/gpu.md), and a seed grid evaluates each."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def _arithmetic(tf32: bool) -> Iterator[None]:
    """The trial's TF32 setting for the evaluation (torch allows TF32 convolutions by
    default; the trials do not unless their config asks), restored afterwards."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@torch.no_grad()
def predict(checkpoint: Location | Path, prepared: Prepared, split: str = "test",
            device: torch.device | str | None = None, reader: str | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, list[str], dict[str, Any]]:
    """A checkpoint's class probabilities on a split (segments x classes, on the CPU), with the
    labels, the track of each segment and the checkpoint's meta. The split is streamed in
    batches (the driver's memory does not grow with it), on `device` (default:
    `eval_device()`), in the trial's own arithmetic (precision, TF32).

    The one reader of the test split: a read names its `reader` (what and why) and is entered
    in the split's ledger (raygenre.data.ledger: the cache's, and the storage's where the sweep
    handed the set with one) before any prediction is made."""
    if split == "test":
        if not reader:
            raise ValueError("reading the test split needs a reader (what reads it and why): "
                             "every read is entered in the set's ledger")
        ledger.record(prepared, reader, str(checkpoint))
    device = torch.device(device) if device is not None else eval_device()
    with checkpoint_scratch() as d:
        checkpoint = Location.parse(checkpoint, "checkpoint")
        feats, model, meta = load_checkpoint(checkpoint.download(Path(d)))
    feats, model = feats.to(device), model.to(device)
    cfg = meta["config"]
    probs_parts, labels, tracks = [], [], []
    with _arithmetic(bool(cfg.get("tf32"))), autocast(device, cfg.get("precision", "fp32")):
        for batch in split_batches(prepared, split, 128, ["x", "label", "track"]):
            x = to_tensor(batch.column("x")).to(device)
            probs_parts.append(model(feats(x)).float().softmax(1).cpu())
            labels += batch.column("label").to_pylist()
            tracks += batch.column("track").to_pylist()
    if device.type == "cuda":
        # The driver's cached blocks would otherwise stay out of the trials' reach.
        del feats, model
        torch.cuda.empty_cache()
    return torch.cat(probs_parts), torch.tensor(labels), tracks, meta


def evaluate(checkpoint: Location | Path, prepared: Prepared, split: str = "test",
             device: torch.device | str | None = None, reader: str | None = None
             ) -> dict[str, Any]:
    """A checkpoint's scores on a split (`predict`, then `scores`); with "_probs", "_labels" and
    "_tracks", the predictions they came from (for intervals)."""
    probs, labels, tracks, meta = predict(checkpoint, prepared, split, device, reader)
    out = scores(probs, labels, tracks, list(prepared.genres), split)
    return {**out, "epoch": meta["metrics"]["epoch"], "checkpoint": str(checkpoint),
            "_probs": probs, "_labels": labels, "_tracks": tracks}
