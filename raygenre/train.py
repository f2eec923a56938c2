"""`train_func(config)`: one readable PyTorch loop, run by Ray Train on each worker.

It knows nothing of the sweep: it gets a config dict, its shards of the "train" and "val"
datasets, reports the fixed metrics once per epoch with a checkpoint, and resumes from the latest
checkpoint when Ray hands it one. All randomness comes from the seed: torch's generator (init,
dropout) is saved in each checkpoint, and the shuffle of epoch e is seeded by (seed, e).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

from raygenre.config import Config
from raygenre.features import SpecAugment, build_features, feature_key, feature_shape
from raygenre.models import build_model
from raygenre.optim import build_optimizer, build_scheduler, step_scheduler

# Keys a sweep adds to the config that are facts of the data and machine, not hyperparameters.
RUNTIME_KEYS = ("num_classes", "segment_samples", "threads", "band_stats")
STATE_FILE = "state.pt"
META_FILE = "meta.json"
# Rows held for the per-epoch shuffle (~0.45 MB each at 5 s x 22 050 Hz): enough to mix many
# tracks, since prepared files are already in a seeded random track order.
SHUFFLE_BUFFER_ROWS = 512
EVAL_BATCH = 128


def split_config(config: dict[str, Any]) -> tuple[Config, dict[str, Any]]:
    """(hyperparameters, runtime facts) from the flat dict Ray passes in."""
    runtime = {k: config[k] for k in RUNTIME_KEYS if k in config}
    missing = {"num_classes", "segment_samples"} - set(runtime)
    if missing:
        raise KeyError(f"train_func config lacks runtime key(s) {sorted(missing)}")
    hp = {k: v for k, v in config.items() if k not in RUNTIME_KEYS}
    return Config.from_dict(hp, "train_func config"), runtime


def make_deterministic(seed: int) -> None:
    """Same seed, same numbers on CPU. On CUDA, cuBLAS needs a fixed workspace and cuDNN its
    deterministic kernels; ops without one (e.g. some pooling backward passes) only warn."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=torch.cuda.is_available())
    torch.backends.cudnn.benchmark = False
    torch.manual_seed(seed)


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


def run_epoch(model: nn.Module, feats: nn.Module, batches: Any, device: torch.device,
              opt: torch.optim.Optimizer | None = None, augment: nn.Module | None = None,
              mixup: float = 0.0) -> tuple[float, float]:
    """(mean loss, accuracy) over `batches`; trains when an optimizer is given.

    Training may mask the features (`augment`) and mix pairs of examples (`mixup` alpha);
    with mixup the accuracy counts the dominant label of each mixed pair.
    """
    training = opt is not None
    loss_sum, correct, count = 0.0, 0.0, 0.0
    model.train(training)
    beta = torch.distributions.Beta(mixup, mixup) if training and mixup > 0 else None
    with torch.set_grad_enabled(training):
        for batch in batches:
            x, y = batch["x"].to(device), batch["label"].to(device)
            x = feats(x)
            if training and augment is not None:
                x = augment(x)
            if beta is not None:
                lam = float(beta.sample())
                perm = torch.randperm(len(y), device=device)
                logits = model(lam * x + (1 - lam) * x[perm])
                loss = (lam * nn.functional.cross_entropy(logits, y)
                        + (1 - lam) * nn.functional.cross_entropy(logits, y[perm]))
                y = y if lam >= 0.5 else y[perm]
            else:
                logits = model(x)
                loss = nn.functional.cross_entropy(logits, y)
            if training:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            count += len(y)
    loss_sum, correct, count = _sum_across_workers([loss_sum, correct, count], device)
    if count == 0:
        raise RuntimeError("a dataset shard yielded no rows: more workers than rows?")
    return loss_sum / count, correct / count


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def train_func(config: dict[str, Any]) -> None:
    cfg, runtime = split_config(config)
    if runtime.get("threads"):
        torch.set_num_threads(int(runtime["threads"]))
    make_deterministic(cfg.seed)
    device = ray.train.torch.get_device()
    feats, model = build(cfg, runtime)
    feats = feats.to(device)
    model = ray.train.torch.prepare_model(model)
    opt = build_optimizer(model.parameters(), cfg)
    sched = build_scheduler(opt, cfg)
    augment = SpecAugment().to(device) if cfg.spec_augment else None

    start_epoch, best_val, history, train_s = 1, float("-inf"), [], 0.0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            # weights_only: a checkpoint is data, never code.
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
            meta = json.loads((Path(d) / META_FILE).read_text())
        history, train_s = meta["history"], meta["metrics"]["train_s"]
        _unwrap(model).load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None:
            sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start_epoch, best_val = state["epoch"] + 1, state["best_val_acc"]

    if checkpoint and start_epoch > cfg.epochs:
        # Restored after its last epoch was saved but before Tune logged it: say it again.
        ray.train.report(history[-1])
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    rank = ray.train.get_context().get_world_rank()
    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_batches = train_shard.iter_torch_batches(
            batch_size=cfg.batch_size, local_shuffle_buffer_size=SHUFFLE_BUFFER_ROWS,
            local_shuffle_seed=cfg.seed * 100_003 + epoch * 101 + rank)
        train_loss, train_acc = run_epoch(model, feats, train_batches, device, opt, augment,
                                          cfg.mixup)
        val_loss, val_acc = run_epoch(model, feats, val_shard.iter_torch_batches(
            batch_size=EVAL_BATCH), device)
        step_scheduler(sched, val_loss)
        best_val = max(best_val, val_acc)
        metrics = {"epoch": epoch, "train/loss": train_loss, "train/acc": train_acc,
                   "val/loss": val_loss, "val/acc": val_acc, "best/val/acc": best_val,
                   "lr": opt.param_groups[0]["lr"], "epoch_s": time.perf_counter() - t0,
                   # Where it ran: on a cluster, trials.csv shows how trials spread.
                   "node": ray.get_runtime_context().get_node_id()[:12]}
        train_s += metrics["epoch_s"]
        metrics["train_s"] = train_s  # summed over restarts, unlike Tune's time_total_s
        history.append(metrics)
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if rank == 0:
                torch.save({"model": _unwrap(model).state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict() if sched is not None else {},
                            "rng": torch.get_rng_state(), "epoch": epoch,
                            "best_val_acc": best_val}, Path(d) / STATE_FILE)
                # The whole history rides in every checkpoint: the latest one is the trial's
                # record even if the driver died before Tune logged the last epochs.
                # state_bytes lets a reader tell a whole checkpoint from one whose upload was
                # cut short (a trial stopped by ASHA mid-upload leaves such a folder).
                (Path(d) / META_FILE).write_text(json.dumps(
                    {"config": cfg.to_dict(), "runtime": runtime, "metrics": metrics,
                     "history": history,
                     "state_bytes": (Path(d) / STATE_FILE).stat().st_size}, indent=1))
                ckpt = ray.train.Checkpoint.from_directory(d)
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=f"epoch_{epoch:04d}")


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """(features, model with trained weights, meta) from a checkpoint folder, for evaluation."""
    meta = json.loads((Path(path) / META_FILE).read_text())
    cfg = Config.from_dict(meta["config"], f"{path}/{META_FILE}")
    feats, model = build(cfg, meta["runtime"])
    state = torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    model.eval()
    return feats, model, meta
