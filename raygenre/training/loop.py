"""`train_loop(config, seam)`: the one training loop, plain PyTorch.

It knows nothing of the sweep nor of who runs it. It gets a config dict (hyperparameters plus the
runtime facts of the data) and a `Seam`: where its batches come from, which device it runs on,
how to report an epoch's metrics with a checkpoint, and the latest checkpoint to resume from.
A one-worker trial hands it a seam onto its Tune trial, a data-parallel trial one onto Ray Train
(raygenre.sweep.runners); tests and benchmarks can hand it anything with the same five members.
All randomness comes from the seed: torch's generators (init, dropout, masks, mixup) are saved in
each checkpoint, and the shuffle of epoch e is seeded by (seed, e).
Features that are a fixed function of each segment (features.PER_SEGMENT) are computed once per
trial, where the seam numbers its rows (`HeldFeatures`); only the augmentations run every epoch.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from raygenre.config import Config
from raygenre.data.features import (
    PER_SEGMENT,
    build_augment,
    build_features,
    feature_key,
    feature_shape,
)
from raygenre.training.models import build_model
from raygenre.training.optim import build_optimizer, build_scheduler, step_scheduler
from raygenre.training.votes import tally_accuracy, track_tally

# Keys a sweep adds to the config that are facts of the data and machine, not hyperparameters.
RUNTIME_KEYS = ("num_classes", "segment_samples", "threads", "band_stats")
STATE_FILE = "state.pt"
META_FILE = "meta.json"
# Every validation pass's per-segment log-probabilities, in the val split's file order, so the
# report can say how sure a figure is (intervals over validation tracks, paired comparisons)
# without re-running a model. Like the history, the whole record rides in every checkpoint:
# the latest one holds every epoch, and a shorter member's pinned copy holds its own.
PREDICTIONS_FILE = "val_predictions.npz"
EVAL_BATCH = 128
# Each epoch's checkpoint is written to a scratch folder that the runner then copies into the
# run's storage. A trial killed while it holds one (kill -9, a lost node, the out-of-memory
# killer) leaves it behind, ~650 MB at the study's resolution, and CI once filled its disk with
# them. The name carries the writer's pid (and pid namespace: containers may share a temp
# dir, not their pids) so that the next loop to start can tell an orphan from a live trial's.
SCRATCH_PREFIX = "raygenre-ckpt-"
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

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        """One epoch's metrics, with the folder of its checkpoint (rank 0) or None."""


def split_config(config: dict[str, Any]) -> tuple[Config, dict[str, Any]]:
    """(hyperparameters, runtime facts) from the flat dict a runner passes in."""
    runtime = {k: config[k] for k in RUNTIME_KEYS if k in config}
    missing = {"num_classes", "segment_samples"} - set(runtime)
    if missing:
        raise KeyError(f"train_loop config lacks runtime key(s) {sorted(missing)}")
    hp = {k: v for k, v in config.items() if k not in RUNTIME_KEYS}
    return Config.from_dict(hp, "train_loop config"), runtime


def make_deterministic(cfg: Config) -> None:
    """Same seed, same numbers. On CUDA, cuBLAS needs a fixed workspace and cuDNN its
    deterministic kernels; ops without one (e.g. some pooling backward passes) only warn.
    TF32 stays off unless the config asks: it changes the arithmetic of every convolution."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=torch.cuda.is_available())
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    torch.backends.cudnn.allow_tf32 = cfg.tf32
    torch.manual_seed(cfg.seed)


def build(cfg: Config, runtime: dict[str, Any]) -> tuple[nn.Module, nn.Module]:
    """(features, model) for this config, on the CPU: the same for training and evaluation."""
    feats = build_features(cfg, runtime.get("band_stats", {}).get(feature_key(cfg)))
    model = build_model(cfg, feature_shape(cfg, runtime["segment_samples"]),
                        runtime["num_classes"])
    return feats, model


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


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


class WeightAverage:
    """An exponential moving average of a model's weights and buffers (batch-norm statistics
    too, as timm's ModelEmaV2 keeps them); integer buffers are copied. Starts from the model's
    weights as given."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay  # in (0, 1): config.check_config
        self.model = copy.deepcopy(_unwrap(model)).requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for mine, theirs in zip(self.model.state_dict().values(),
                                _unwrap(model).state_dict().values(), strict=True):
            if mine.is_floating_point():
                mine.lerp_(theirs, 1.0 - self.decay)
            else:
                mine.copy_(theirs)


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


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """Every generator the loop draws from: the CPU's (init, mixup's Beta) and, on a GPU, the
    device's (dropout, SpecAugment's masks, mixup's pairing run there)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda":
        if "cuda" not in state:
            raise ValueError("this checkpoint was written on a CPU and holds no GPU generator "
                             "state; resume it on a CPU (or start the trial over)")
        torch.cuda.set_rng_state(state["cuda"], device)


def train_loop(config: dict[str, Any], seam: Seam) -> None:
    """Train `config` for its epochs, reporting each one through `seam`."""
    cfg, runtime = split_config(config)
    remove_orphaned_scratch()
    if runtime.get("threads"):
        torch.set_num_threads(int(runtime["threads"]))
    make_deterministic(cfg)
    device = seam.device
    feats, model = build(cfg, runtime)
    feats = feats.to(device)
    model = seam.wrap_model(model)
    opt = build_optimizer(model.parameters(), cfg)
    sched = build_scheduler(opt, cfg)
    average = WeightAverage(model, cfg.ema) if cfg.ema else None
    judged = average.model if average is not None else model  # validated, kept, tested
    augment = build_augment(cfg)
    augment = augment.to(device) if augment is not None else None

    start_epoch, best_val, history, train_s = 1, float("-inf"), [], 0.0
    predictions = ValPredictions()
    with seam.latest_checkpoint() as d:
        if d is not None:
            predictions = ValPredictions.load(d)
            # weights_only: a checkpoint is data, never code.
            state = torch.load(d / STATE_FILE, map_location="cpu", weights_only=True)
            meta = json.loads((d / META_FILE).read_text())
            history, train_s = meta["history"], meta["metrics"]["train_s"]
            if average is not None:
                _unwrap(model).load_state_dict(state["trained"])
                average.model.load_state_dict(state["model"])
            else:
                _unwrap(model).load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            if sched is not None:
                sched.load_state_dict(state["scheduler"])
            _set_rng_state(state["rng"], device)
            start_epoch, best_val = state["epoch"] + 1, state["best_val_acc"]
            if start_epoch > cfg.epochs:
                # Restored after its last epoch was saved but before the runner logged it:
                # say it again, so the record ends where the checkpoints do.
                seam.report(history[-1], None)

    held: dict[str, HeldFeatures] = {}

    def read(split: str, size: int, shuffle: int | None) -> tuple[Iterable[Batch], nn.Module]:
        """A split's batches and what turns their "x" into features (nothing, where held)."""
        batches = seam.batches(split, size, shuffle)
        if split in held:
            return held[split].batches(batches, feats, device), nn.Identity()
        return batches, feats

    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        if epoch == start_epoch:  # in the epoch's time: a trial's train_s counts this pass
            held = hold_features(cfg, feats, seam, {"train": (cfg.batch_size, True),
                                                    "val": (EVAL_BATCH, False)})
        batches, train_feats = read("train", cfg.batch_size, cfg.seed * 100_003 + epoch * 101)
        train_loss, train_acc = run_epoch(
            model, train_feats, batches, device, opt, augment, cfg.mixup, cfg.precision,
            average, cfg.label_smoothing)
        val_logp: list[torch.Tensor] = []
        seen: dict[str, list[torch.Tensor]] = {"label": [], "track": []}
        batches, val_feats = read("val", EVAL_BATCH, None)
        val_loss, val_acc = run_epoch(judged, val_feats, _tap(batches, seen), device,
                                      precision=cfg.precision, outputs=val_logp)
        logp = torch.cat(val_logp)
        predictions.add(epoch, logp)
        step_scheduler(sched, val_loss)
        best_val = max(best_val, val_acc)
        metrics = {"epoch": epoch, "train/loss": train_loss, "train/acc": train_acc,
                   "val/loss": val_loss, "val/acc": val_acc, "best/val/acc": best_val,
                   "lr": opt.param_groups[0]["lr"], "epoch_s": time.perf_counter() - t0}
        if len(seen["track"]) == len(val_logp):  # every batch named its tracks
            metrics["val/track_acc"] = _track_accuracy_across_workers(
                logp.exp(), torch.cat(seen["label"]), torch.cat(seen["track"]), device)
        train_s += metrics["epoch_s"]
        metrics["train_s"] = train_s  # summed over restarts, unlike Tune's time_total_s
        history.append(metrics)
        with checkpoint_scratch() as tmp:
            checkpoint = None
            if seam.rank == 0:
                checkpoint = Path(tmp)
                predictions.save(checkpoint)  # before meta.json, which copies write last
                # "model" holds the weights judged and tested (the average, with ema);
                # "trained", the ones training goes on from.
                extra = {"trained": _unwrap(model).state_dict()} if average is not None else {}
                save_checkpoint(checkpoint, cfg, runtime, metrics, history, {
                    "model": _unwrap(judged).state_dict(), **extra,
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else {},
                    "rng": _rng_state(device), "epoch": epoch, "best_val_acc": best_val})
            seam.report(metrics, checkpoint)


def _tap(batches: Iterable[Batch], seen: dict[str, list[torch.Tensor]]) -> Iterator[Batch]:
    """`batches` as they are, each one's tensors under `seen`'s keys kept there as they pass:
    the vote per track needs each segment's track, which the features pass does not keep."""
    for batch in batches:
        for key, kept in seen.items():
            if key in batch:
                kept.append(batch[key])
        yield batch


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


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:  # no /proc (macOS): one namespace
        return "0"


def scratch_prefix(pid: int | None = None) -> str:
    """The name start of a process's checkpoint scratch folders: SCRATCH_PREFIX, then
    `<pid namespace>.<pid>-`."""
    return f"{SCRATCH_PREFIX}{_pid_namespace()}.{pid or os.getpid()}-"


def checkpoint_scratch() -> tempfile.TemporaryDirectory:
    """A temp folder for one checkpoint's files, named for this process."""
    return tempfile.TemporaryDirectory(prefix=scratch_prefix())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphaned_scratch(root: str | os.PathLike | None = None) -> list[Path]:
    """Remove the checkpoint scratch folders in `root` (the temp dir) whose writer has died:
    a trial's (each epoch's checkpoint) or a driver's (a checkpoint fetched for the test).

    A live process's folders stay, whoever it is, and so do those of another pid namespace
    (another container's), whose pids mean nothing here, and another user's; a reused pid
    keeps an orphan until that process ends too, which costs disk, never a live checkpoint.
    """
    removed, ours = [], _pid_namespace()
    for folder in sorted(Path(root or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*.*-*")):
        ns, _, pid = folder.name[len(SCRATCH_PREFIX):].split("-", 1)[0].partition(".")
        if ns != ours or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            if folder.stat().st_uid != os.getuid():  # another user's: not ours to remove
                continue
            shutil.rmtree(folder)
        except FileNotFoundError:  # another starting loop removed it first
            continue
        removed.append(folder)
    return removed


def save_checkpoint(folder: Path, cfg: Config, runtime: dict[str, Any], metrics: dict[str, Any],
                    history: list[dict[str, Any]], state: dict[str, Any]) -> None:
    """state.pt (tensors) and meta.json (config, metrics, the whole history) in `folder`.

    The whole history rides in every checkpoint: the latest one is the trial's record even if
    the driver died before logging the last epochs. state_bytes lets a reader tell a whole
    checkpoint from one whose copy was cut short.
    """
    torch.save(state, folder / STATE_FILE)
    (folder / META_FILE).write_text(json.dumps(
        {"config": cfg.to_dict(), "runtime": runtime, "metrics": metrics, "history": history,
         "state_bytes": (folder / STATE_FILE).stat().st_size}, indent=1))


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
    """A checkpoint's meta.json: its config, metrics and history up to its epoch."""
    return json.loads((Path(folder) / META_FILE).read_text())


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """(features, model with trained weights, meta) from a checkpoint folder, for evaluation."""
    meta = read_meta(path)
    cfg = Config.from_dict(meta["config"], f"{path}/{META_FILE}")
    feats, model = build(cfg, meta["runtime"])
    state = torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    model.eval()
    return feats, model, meta


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

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint is not None:
            shutil.copytree(checkpoint, self.folder / f"epoch_{metrics['epoch']:04d}")
