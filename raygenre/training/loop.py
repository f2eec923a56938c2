"""`train_loop(cfg, runtime, seam)`: the one training loop, plain PyTorch.

It knows nothing of the sweep nor of who runs it. It gets a typed config (the hyperparameters),
the runtime facts of the data beside it (`builder.Runtime`) and a `Seam`: where its batches come
from, which device it runs on, how to report an epoch's metrics with a checkpoint, the latest
checkpoint to resume from, and which epochs it must checkpoint whatever `checkpoint_every` says.
A one-worker trial hands it a seam onto its Tune trial, a data-parallel trial one onto Ray Train
(raygenre.sweep.runners); tests and benchmarks can hand it anything with the same members.
All randomness comes from the seed: torch's generators (init, dropout, masks, mixup) are saved in
each checkpoint, and the shuffle of epoch e is seeded by (seed, e).
Features that are a fixed function of each segment (features.PER_SEGMENT) are computed once per
trial, where the seam numbers its rows (`HeldFeatures`); only the augmentations run every epoch.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from raygenre.config import Config
from raygenre.data.features import PER_SEGMENT
from raygenre.training.builder import Runtime, Training, WeightAverage, build_training, unwrap
from raygenre.training.checkpoints import (
    STATE_FILE,
    ValPredictions,
    read_meta,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from raygenre.training.optim import step_scheduler
from raygenre.training.scratch import checkpoint_scratch, remove_orphaned_scratch
from raygenre.training.votes import tally_accuracy, track_tally

EVAL_BATCH = 128
# What a trial may add to its memory (on its device) to hold its splits' features: the CPU
# preset's semitone features of builtin:music's train split take 66 MB, the study preset's
# spectrograms of the same 0.8 GB; a split past what is left is computed per batch, as before.
# Bounded because trials share a machine (two per core pair here, several per GPU), and the
# pass that builds a split briefly holds it twice (its batches, then their concatenation).
FEATURE_CACHE_BYTES = 2 * 2**30

Batch = dict[str, torch.Tensor]


class Seam(Protocol):
    """What the loop needs from whoever runs it."""

    rank: int  # 0 writes checkpoints; others (data-parallel workers) only report
    device: torch.device

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """The model on the device, wrapped for data parallelism where there is any."""

    def batches(self, split: str, batch_size: int, shuffle_seed: int | None) -> Iterable[Batch]:
        """This worker's share of a split, in CPU tensors; shuffled when a seed is given.
        A seam whose class sets `numbered_rows = True` adds "row": each row's number in the
        split (0 to n-1, the same every epoch), which lets the loop hold features per row.
        Validation batches may add "track": each segment's track as a number (the split's
        tracks in order of first appearance); the loop then reports `val/track_acc`."""

    def latest_checkpoint(self) -> contextlib.AbstractContextManager[Path | None]:
        """The folder of the checkpoint to resume from, or None on a first start."""

    def must_keep(self, history: list[dict[str, Any]]) -> bool:
        """Whether the epoch just ended (`history[-1]`) must be checkpointed even between
        `checkpoint_every`'s epochs: the runner will judge, test or stop the trial there."""

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        """One epoch's metrics, with the folder of its checkpoint (rank 0) or None."""


def _sum_across_workers(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def _track_accuracy_across_workers(probs: torch.Tensor, labels: torch.Tensor,
                                   tracks: torch.Tensor, device: torch.device) -> float:
    """Validation track accuracy over every worker's segments. The runner gives every
    data-parallel worker the whole validation split, so the summed tallies are N times one
    worker's and every vote is the same; were validation sharded, a track's segments could sit
    on several workers, and the summed tallies are still the whole split's (`track_tally`)."""
    size = torch.tensor([int(tracks.max()) + 1 if len(tracks) else 0], device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(size, op=dist.ReduceOp.MAX)
    tally = track_tally(probs, labels, tracks, int(size.item())).to(device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tally)
    return tally_accuracy(tally.cpu())


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The config's arithmetic for the model's forward pass: bf16 autocast or none."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def run_epoch(model: nn.Module, feats: nn.Module, batches: Iterable[Batch],
              device: torch.device | str, opt: torch.optim.Optimizer | None = None,
              augment: nn.Module | None = None, mixup: float = 0.0,
              precision: str = "fp32", average: WeightAverage | None = None,
              label_smoothing: float = 0.0, outputs: list[torch.Tensor] | None = None
              ) -> tuple[float, float]:
    """(mean loss, accuracy) over `batches`; trains when an optimizer is given.

    Training may mask the features (`augment`) and mix pairs of examples (`mixup` alpha);
    with mixup the loss is the mix of both labels' losses and the accuracy counts the dominant
    label of each mixed pair. `precision` 'bf16' runs the model under autocast. `average`, if
    given, follows the weights after every step. `label_smoothing` applies while training only.
    `outputs`, if given, receives each batch's log-probabilities (float32, on the CPU).
    """
    device = torch.device(device)
    training = opt is not None
    loss_sum, correct, count = 0.0, 0.0, 0.0
    model.train(training)
    beta = torch.distributions.Beta(mixup, mixup) if training and mixup > 0 else None
    smooth = label_smoothing if training else 0.0
    with torch.set_grad_enabled(training):
        for batch in batches:
            x, y = batch["x"].to(device), batch["label"].to(device)
            x = feats(x)
            if training and augment is not None:
                x = augment(x)
            with autocast(device, precision):
                if beta is not None:
                    lam = float(beta.sample())
                    perm = torch.randperm(len(y), device=device)
                    logits = model(lam * x + (1 - lam) * x[perm])
                    loss = (lam * nn.functional.cross_entropy(logits, y, label_smoothing=smooth)
                            + (1 - lam) * nn.functional.cross_entropy(
                                logits, y[perm], label_smoothing=smooth))
                    y = y if lam >= 0.5 else y[perm]
                else:
                    logits = model(x)
                    loss = nn.functional.cross_entropy(logits, y, label_smoothing=smooth)
            if training:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if average is not None:
                    average.update(model)
            if outputs is not None:
                outputs.append(logits.detach().float().log_softmax(1).cpu())
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            count += len(y)
    loss_sum, correct, count = _sum_across_workers([loss_sum, correct, count], device)
    if count == 0:
        raise RuntimeError("a dataset shard yielded no rows: more workers than rows?")
    return loss_sum / count, correct / count


class HeldFeatures:
    """One split's features, computed once per trial on its device, one row per segment.

    A batch is served from here only where every one of its rows was computed in a batch of
    its own size; other batches are computed from their waveforms as before. The reason: on
    more than one thread MKL's matrix product (the semitone and mel filterbanks) gives a row's
    result as a function of the batch's row count (measured: up to 6e-6 dB apart between
    batches of 32 and 128), never of which other rows it holds, and the STFT depends on
    neither. Hence `full`: a split read shuffled has every batch of `batch_size` rows but its
    last, so all of its rows are computed in batches of exactly that size (the tail topped up
    with the rows before it); a split read in order (validation) gets its very batches.
    Either way the values are those the per-batch path gives, and they do not depend on which
    epoch a trial (re)started at: a resumed trial gives the same numbers.
    """

    def __init__(self, x: torch.Tensor, size: torch.Tensor) -> None:
        self.x = x  # (rows, *feature shape), on the trial's device
        self.size = size  # (rows,) on the CPU: the row count of the batch each row was computed in

    @classmethod
    @torch.no_grad()
    def compute(cls, feats: nn.Module, batches: Iterable[Batch], batch_size: int, full: bool,
                device: torch.device, budget: int) -> HeldFeatures | None:
        """The split in `batches` (unshuffled, `batch_size` rows each, numbered); None once it
        passes `budget` bytes."""
        out, rows, sizes, held, last = [], [], [], 0, None
        for batch in batches:
            x, row = batch["x"], batch["row"]
            new = len(row)
            if full and new < batch_size and last is not None:
                top = batch_size - new
                x, row = torch.cat([last["x"][-top:], x]), torch.cat([last["row"][-top:], row])
            f = feats(x.to(device))[-new:]
            held += f.nbytes
            if held > budget:
                return None
            out.append(f)
            rows.append(row[-new:])
            sizes.append(torch.full((new,), len(row), dtype=torch.int64))
            last = batch
        if not out:
            return None
        order = torch.cat(rows)
        if not torch.equal(order.sort().values, torch.arange(len(order))):
            raise ValueError("a seam's row numbers must be 0 to n-1, each once")
        x, size = torch.cat(out), torch.cat(sizes)
        if not torch.equal(order, torch.arange(len(order))):  # a seam that yields rows out of order
            at = torch.argsort(order)
            x, size = x[at.to(x.device)], size[at]
        return cls(x, size)

    def batches(self, batches: Iterable[Batch], feats: nn.Module,
                device: torch.device) -> Iterator[Batch]:
        """`batches` with their features for "x", held or (see above) computed here."""
        for batch in batches:
            row = batch["row"]
            if bool((self.size[row] == len(row)).all()):
                x = self.x[row.to(self.x.device)]  # a copy: augmentations never touch the held
            else:
                with torch.no_grad():
                    x = feats(batch["x"].to(device))
            yield {"x": x, "label": batch["label"],
                   **({"track": batch["track"]} if "track" in batch else {})}


def hold_features(cfg: Config, feats: nn.Module, seam: Seam,
                  splits: dict[str, tuple[int, bool]]) -> dict[str, HeldFeatures]:
    """Each split's `HeldFeatures` ({split: (batch_size, read shuffled)}), where this config's
    features are fixed per segment and the seam numbers its rows; within FEATURE_CACHE_BYTES
    in all, the first splits first. A data-parallel worker's shard comes through Ray Data
    unnumbered, so those trials compute features per batch."""
    held: dict[str, HeldFeatures] = {}
    if cfg.features not in PER_SEGMENT or not getattr(seam, "numbered_rows", False):
        return held
    budget = FEATURE_CACHE_BYTES
    for split, (size, shuffled) in splits.items():
        h = HeldFeatures.compute(feats, seam.batches(split, size, None), size, shuffled,
                                 seam.device, budget)
        if h is not None:
            held[split] = h
            budget -= h.x.nbytes
    return held


def train_epoch(t: Training, batches: Iterable[Batch], feats: nn.Module | None = None
                ) -> tuple[float, float]:
    """One training pass as the loop makes it (`run_epoch` with the config's augmentation,
    mixup, precision, weight average and label smoothing): benchmarks time this very call.
    `feats`: what turns the batches' "x" into features (the trial's, unless given)."""
    cfg = t.cfg
    return run_epoch(t.model, t.feats if feats is None else feats, batches, t.device, t.opt,
                     t.augment, cfg.mixup, cfg.precision, t.average, cfg.label_smoothing)


@dataclass
class Progress:
    """How far a trial has come: nothing on a first start, its latest checkpoint's on a
    restart."""

    start_epoch: int = 1
    best_val: float = float("-inf")
    history: list[dict[str, Any]] = field(default_factory=list)
    train_s: float = 0.0  # summed over restarts, unlike Tune's time_total_s
    predictions: ValPredictions = field(default_factory=ValPredictions)


def train_loop(cfg: Config, runtime: Runtime, seam: Seam) -> None:
    """Train `cfg` for its epochs, reporting each one through `seam`."""
    remove_orphaned_scratch()
    t = build_training(cfg, runtime, seam.device, seam.wrap_model)
    progress = _resume(t, seam)
    held: dict[str, HeldFeatures] = {}

    def read(split: str, size: int, shuffle: int | None) -> tuple[Iterable[Batch], nn.Module]:
        """A split's batches and what turns their "x" into features (nothing, where held)."""
        batches = seam.batches(split, size, shuffle)
        if split in held:
            return held[split].batches(batches, t.feats, t.device), nn.Identity()
        return batches, t.feats

    for epoch in range(progress.start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        if epoch == progress.start_epoch:  # in the epoch's time: a trial's train_s counts this
            held = hold_features(cfg, t.feats, seam, {"train": (cfg.batch_size, True),
                                                      "val": (EVAL_BATCH, False)})
        metrics = _run_one_epoch(t, read, epoch, progress, t0)
        progress.history.append(metrics)
        due = (epoch % runtime.checkpoint_every == 0 or epoch == cfg.epochs
               or seam.must_keep(progress.history))
        if not due or seam.rank != 0:
            seam.report(metrics, None)
            continue
        with checkpoint_scratch() as tmp:
            _save(Path(tmp), t, runtime, progress, epoch)
            seam.report(metrics, Path(tmp))


def _resume(t: Training, seam: Seam) -> Progress:
    """The trial's progress, and its weights, optimizer, schedule and generators, from the
    seam's latest checkpoint; a fresh start's where there is none."""
    progress = Progress()
    with seam.latest_checkpoint() as d:
        if d is None:
            return progress
        progress.predictions = ValPredictions.load(d)
        # weights_only: a checkpoint is data, never code.
        state = torch.load(d / STATE_FILE, map_location="cpu", weights_only=True)
        meta = read_meta(d)
        progress.history, progress.train_s = meta["history"], meta["metrics"]["train_s"]
        if t.average is not None:
            unwrap(t.model).load_state_dict(state["trained"])
            t.average.model.load_state_dict(state["model"])
        else:
            unwrap(t.model).load_state_dict(state["model"])
        t.opt.load_state_dict(state["optimizer"])
        if t.sched is not None:
            t.sched.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"], t.device)
        progress.start_epoch, progress.best_val = state["epoch"] + 1, state["best_val_acc"]
        if progress.start_epoch > t.cfg.epochs:
            # Restored after its last epoch was saved but before the runner logged it:
            # say it again, so the record ends where the checkpoints do.
            seam.report(progress.history[-1], None)
    return progress


# read(split, batch size, shuffle seed): its batches and what turns their "x" into features
Reader = Callable[[str, int, int | None], tuple[Iterable[Batch], nn.Module]]


def _run_one_epoch(t: Training, read: Reader, epoch: int, progress: Progress,
                   t0: float) -> dict[str, Any]:
    """Train one epoch and validate the judged weights: the epoch's metrics."""
    cfg, device = t.cfg, t.device
    batches, train_feats = read("train", cfg.batch_size, cfg.seed * 100_003 + epoch * 101)
    train_loss, train_acc = train_epoch(t, batches, train_feats)
    val_logp: list[torch.Tensor] = []
    seen: dict[str, list[torch.Tensor]] = {"label": [], "track": []}
    batches, val_feats = read("val", EVAL_BATCH, None)
    val_loss, val_acc = run_epoch(t.judged, val_feats, _collecting(batches, seen), device,
                                  precision=cfg.precision, outputs=val_logp)
    logp = torch.cat(val_logp)
    progress.predictions.add(epoch, logp)
    step_scheduler(t.sched, val_loss)
    progress.best_val = max(progress.best_val, val_acc)
    metrics = {"epoch": epoch, "train/loss": train_loss, "train/acc": train_acc,
               "val/loss": val_loss, "val/acc": val_acc, "best/val/acc": progress.best_val,
               "lr": t.opt.param_groups[0]["lr"], "epoch_s": time.perf_counter() - t0}
    if len(seen["track"]) == len(val_logp):  # every batch named its tracks
        metrics["val/track_acc"] = _track_accuracy_across_workers(
            logp.exp(), torch.cat(seen["label"]), torch.cat(seen["track"]), device)
    progress.train_s += metrics["epoch_s"]
    metrics["train_s"] = progress.train_s  # summed over restarts, unlike Tune's time_total_s
    return metrics


def _save(folder: Path, t: Training, runtime: Runtime, progress: Progress, epoch: int) -> None:
    """Epoch `epoch`'s checkpoint in `folder`: the predictions first (meta.json, which copies
    write last, then vouches for them), the weights, optimizer, schedule and generators."""
    progress.predictions.save(folder)
    # "model" holds the weights judged and tested (the average, with ema); "trained", the ones
    # training goes on from.
    extra = {"trained": unwrap(t.model).state_dict()} if t.average is not None else {}
    save_checkpoint(folder, t.cfg, runtime, progress.history[-1], progress.history, {
        "model": unwrap(t.judged).state_dict(), **extra,
        "optimizer": t.opt.state_dict(),
        "scheduler": t.sched.state_dict() if t.sched is not None else {},
        "rng": rng_state(t.device), "epoch": epoch, "best_val_acc": progress.best_val})


def _collecting(batches: Iterable[Batch], seen: dict[str, list[torch.Tensor]]
                ) -> Iterator[Batch]:
    """`batches` as they are, each one's tensors under `seen`'s keys kept there as they pass:
    the vote per track needs each segment's track, which the features pass does not keep."""
    for batch in batches:
        for key, kept in seen.items():
            if key in batch:
                kept.append(batch[key])
        yield batch


class LocalSeam:
    """A seam for one process with the data in memory: tests, benchmarks and notebooks run the
    same loop without Ray. Checkpoints go to `folder/epoch_NNNN/`; `reports` keeps the metrics."""

    rank = 0
    numbered_rows = True

    def __init__(self, data: dict[str, tuple[torch.Tensor, ...]], folder: Path,
                 device: str = "cpu") -> None:
        self.data, self.folder, self.device = data, Path(folder), torch.device(device)
        self.reports: list[dict[str, Any]] = []

    def wrap_model(self, model: nn.Module) -> nn.Module:
        return model.to(self.device)

    def batches(self, split: str, batch_size: int, shuffle_seed: int | None) -> Iterator[Batch]:
        x, y, *track = self.data[split]  # (x, labels) or (x, labels, track numbers)
        order = (torch.randperm(len(y), generator=torch.Generator().manual_seed(shuffle_seed))
                 if shuffle_seed is not None else torch.arange(len(y)))
        for i in range(0, len(y), batch_size):
            idx = order[i:i + batch_size]
            yield {"x": x[idx], "label": y[idx], "row": idx,
                   **({"track": track[0][idx]} if track else {})}

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        found = sorted(self.folder.glob("epoch_*"))
        yield found[-1] if found else None

    def must_keep(self, history: list[dict[str, Any]]) -> bool:
        return False  # nothing judges a local run at an epoch of its own choosing

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint is not None:
            shutil.copytree(checkpoint, self.folder / f"epoch_{metrics['epoch']:04d}")
