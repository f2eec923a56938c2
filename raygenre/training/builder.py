"""What the loop builds before its first epoch, in one place: `build_training(cfg, runtime,
device)`. Trials and every benchmark build through it, so a benchmark cannot drift from the loop
(tests/test_train.py holds bench/ to it).

`Runtime` holds the facts a trial needs besides its hyperparameters (the data's classes and
segment length, band statistics, threads, how often to checkpoint): they travel beside the
`Config`, never inside it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from raygenre.config import Config, ConfigError
from raygenre.data.features import build_augment, build_features, feature_key, feature_shape
from raygenre.training.models import build_model
from raygenre.training.optim import build_optimizer, build_scheduler


@dataclass(frozen=True)
class Runtime:
    """Facts of the data and the machine that every trial of a sweep shares."""

    num_classes: int
    segment_samples: int
    threads: int | None = None  # torch's threads in the trial; None leaves torch's default
    # {feature_key: {"mean": [...], "std": [...]}}: train-split statistics, for band norm
    band_stats: dict[str, Any] = field(default_factory=dict)
    # Checkpoint every k epochs (and always at the last and whatever the seam must keep): 1
    # keeps the old behaviour, a resume then redoes at most the epoch under way.
    checkpoint_every: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "runtime") -> Runtime:
        """From plain values: a checkpoint's meta (older ones lack the later keys) or a
        sweep's facts."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = set(d) - known, {"num_classes", "segment_samples"} - set(d)
        if unknown or missing:
            raise ConfigError(f"{where}: runtime facts "
                              + (f"lack {sorted(missing)}" if missing else "")
                              + ("; " if unknown and missing else "")
                              + (f"hold unknown key(s) {sorted(unknown)}" if unknown else ""))
        runtime = cls(**d)
        if runtime.checkpoint_every < 1:
            raise ConfigError(f"{where}: checkpoint_every must be 1 or more, got "
                              f"{runtime.checkpoint_every}")
        return runtime


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


def build(cfg: Config, runtime: Runtime) -> tuple[nn.Module, nn.Module]:
    """(features, model) for this config, on the CPU: the same for training and evaluation."""
    feats = build_features(cfg, runtime.band_stats.get(feature_key(cfg)))
    model = build_model(cfg, feature_shape(cfg, runtime.segment_samples), runtime.num_classes)
    return feats, model


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a data-parallel wrapper, or the model."""
    return model.module if hasattr(model, "module") else model


class WeightAverage:
    """An exponential moving average of a model's weights and buffers (batch-norm statistics
    too, as timm's ModelEmaV2 keeps them); integer buffers are copied. Starts from the model's
    weights as given."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay  # in (0, 1): config.check_config
        self.model = copy.deepcopy(unwrap(model)).requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for mine, theirs in zip(self.model.state_dict().values(),
                                unwrap(model).state_dict().values(), strict=True):
            if mine.is_floating_point():
                mine.lerp_(theirs, 1.0 - self.decay)
            else:
                mine.copy_(theirs)


@dataclass
class Training:
    """Everything one trial trains with, on its device."""

    cfg: Config
    device: torch.device
    feats: nn.Module
    model: nn.Module  # as the seam wrapped it (DDP on a data-parallel worker)
    opt: torch.optim.Optimizer
    sched: Any  # a torch scheduler, or None (optim.build_scheduler)
    average: WeightAverage | None
    augment: nn.Module | None

    @property
    def judged(self) -> nn.Module:
        """The weights validated, kept and tested: the average, with ema."""
        return self.average.model if self.average is not None else self.model


def build_training(cfg: Config, runtime: Runtime, device: torch.device | str,
                   wrap_model: Callable[[nn.Module], nn.Module] | None = None) -> Training:
    """Seed, then features, model, optimizer, schedule, weight average and augmentation, in
    the order the loop always drew them (the model's initial weights come from the seed).
    `wrap_model` puts the model on the device (a seam's, for data parallelism); by default
    `.to(device)`."""
    device = torch.device(device)
    if runtime.threads:
        torch.set_num_threads(int(runtime.threads))
    make_deterministic(cfg)
    feats, model = build(cfg, runtime)
    feats = feats.to(device)
    model = wrap_model(model) if wrap_model is not None else model.to(device)
    opt = build_optimizer(model.parameters(), cfg)
    sched = build_scheduler(opt, cfg)
    average = WeightAverage(model, cfg.ema) if cfg.ema else None
    augment = build_augment(cfg)
    augment = augment.to(device) if augment is not None else None
    return Training(cfg, device, feats, model, opt, sched, average, augment)
