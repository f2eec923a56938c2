"""A trial's checkpoint: what it holds (state.pt, meta.json, the validation predictions), how it
is written and read back, and what one weighs before any is written (the plan line's price)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raygenre.config import Config
from raygenre.data.features import feature_shape
from raygenre.training.builder import Runtime, build
from raygenre.training.models import build_model

STATE_FILE = "state.pt"
META_FILE = "meta.json"
# Every validation pass's per-segment log-probabilities, in the val split's file order, so the
# report can say how sure a figure is (intervals over validation tracks, paired comparisons)
# without re-running a model. Like the history, the whole record rides in every checkpoint:
# the latest one holds every epoch, and a shorter member's kept copy holds its own.
PREDICTIONS_FILE = "val_predictions.npz"


class ValPredictions:
    """Each epoch's validation log-probabilities (segments x classes), by epoch: what the
    report bootstraps over validation tracks. ~5 KB an epoch on the built-in split."""

    def __init__(self, by_epoch: dict[int, np.ndarray] | None = None) -> None:
        self.by_epoch = dict(by_epoch or {})

    def add(self, epoch: int, logp: torch.Tensor) -> None:
        self.by_epoch[epoch] = logp.numpy().astype(np.float32, copy=False)

    def save(self, folder: Path) -> None:
        epochs = sorted(self.by_epoch)
        np.savez(folder / PREDICTIONS_FILE, epochs=np.array(epochs, dtype=np.int32),
                 logp=np.stack([self.by_epoch[e] for e in epochs]))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ValPredictions:
        """The record in a local checkpoint folder (`from_bytes`)."""
        path = Path(folder) / PREDICTIONS_FILE
        return cls.from_bytes(path.read_bytes() if path.exists() else None)

    @classmethod
    def from_bytes(cls, data: bytes | None) -> ValPredictions:
        """A record from its file's bytes; empty for None, a checkpoint written before records
        were kept (its epochs then have no interval; later epochs still do)."""
        if data is None:
            return cls()
        with np.load(io.BytesIO(data)) as f:
            return cls(dict(zip(f["epochs"].tolist(), f["logp"], strict=True)))


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """Every generator the loop draws from: the CPU's (init, mixup's Beta) and, on a GPU, the
    device's (dropout, SpecAugment's masks, mixup's pairing run there)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda":
        if "cuda" not in state:
            raise ValueError("this checkpoint was written on a CPU and holds no GPU generator "
                             "state; resume it on a CPU (or start the trial over)")
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(folder: Path, cfg: Config, runtime: Runtime, metrics: dict[str, Any],
                    history: list[dict[str, Any]], state: dict[str, Any]) -> None:
    """state.pt (tensors) and meta.json (config, runtime facts, metrics, the whole history) in
    `folder`.

    The whole history rides in every checkpoint: the latest one is the trial's record even if
    the driver died before logging the last epochs. state_bytes lets a reader tell a whole
    checkpoint from one whose copy was cut short.
    """
    torch.save(state, folder / STATE_FILE)
    (folder / META_FILE).write_text(json.dumps(
        {"config": cfg.to_dict(), "runtime": runtime.to_dict(), "metrics": metrics,
         "history": history, "state_bytes": (folder / STATE_FILE).stat().st_size}, indent=1))


# Optimizer state per parameter value, in parameter-sized tensors: Adam keeps two moments, SGD a
# momentum buffer when it has momentum.
def _optimizer_slots(cfg: Config) -> int:
    return {"adam": 2, "sgd": 1 if cfg.momentum else 0}.get(cfg.optimizer, 2)


def checkpoint_bytes(cfg: Config, segment_samples: int, num_classes: int, val_segments: int,
                     epoch: int) -> int:
    """About what one epoch's checkpoint (`save_checkpoint` and the predictions) weighs:
    the judged weights and buffers, the optimizer's state, the trained weights too with ema,
    and every validation pass so far. The model is built without memory (meta device); the
    feature shape is taken outside it, since feature transforms compute on real tensors as they
    are built (a mel filterbank checks its own values)."""
    shape = feature_shape(cfg, segment_samples)
    with torch.device("meta"):
        model = build_model(cfg, shape, num_classes)
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    weights = state * (2 if cfg.ema else 1)
    predictions = epoch * val_segments * num_classes * 4
    return weights + _optimizer_slots(cfg) * params + predictions


def read_meta(folder: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's meta.json: its config, runtime facts, metrics and history up to its
    epoch."""
    return json.loads((Path(folder) / META_FILE).read_text())


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """(features, model with trained weights, meta) from a checkpoint folder, for evaluation.
    Reads checkpoints of every version: older metas hold fewer runtime facts."""
    meta = read_meta(path)
    where = f"{path}/{META_FILE}"
    cfg = Config.from_dict(meta["config"], where)
    feats, model = build(cfg, Runtime.from_dict(meta["runtime"], where))
    state = torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    model.eval()
    return feats, model, meta
