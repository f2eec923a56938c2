"""Optimizers and learning-rate schedulers by name."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    ExponentialLR,
    LRScheduler,
    ReduceLROnPlateau,
)

from raygenre.config import Config

Params = Iterable[torch.nn.Parameter]

# weight_decay here is the study's L2 penalty (added to the gradient), not AdamW's decoupled decay.
OPTIMIZERS: dict[str, Callable[[Params, Config], torch.optim.Optimizer]] = {
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.lr, weight_decay=c.weight_decay),
    "sgd": lambda p, c: torch.optim.SGD(p, lr=c.lr, momentum=c.momentum,
                                        weight_decay=c.weight_decay),
}

Scheduler = LRScheduler | ReduceLROnPlateau
SCHEDULERS: dict[str, Callable[[torch.optim.Optimizer, Config], Scheduler | None]] = {
    "none": lambda o, c: None,
    "exponential": lambda o, c: ExponentialLR(o, gamma=c.gamma),
    # Watches validation loss: it moves every epoch, where accuracy plateaus in steps.
    "plateau": lambda o, c: ReduceLROnPlateau(o, mode="min", factor=c.plateau_factor,
                                              patience=c.plateau_patience),
    # Stepped per epoch, reaching ~0 after the trial's last epoch.
    "cosine": lambda o, c: CosineAnnealingLR(o, T_max=c.epochs),
}


# Schedulers whose arithmetic depends on the epoch count (cosine's period is `epochs`): a cell
# using one is not the first epochs of a longer cell, so it never shares a trial (grid/file.py).
READS_EPOCHS = frozenset({"cosine"})


def build_optimizer(params: Params, cfg: Config) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.optimizer](params, cfg)


def build_scheduler(opt: torch.optim.Optimizer, cfg: Config) -> Scheduler | None:
    return SCHEDULERS[cfg.scheduler](opt, cfg)


def step_scheduler(sched: Scheduler | None, val_loss: float) -> None:
    """Once per epoch, after validation."""
    if isinstance(sched, ReduceLROnPlateau):
        sched.step(val_loss)
    elif sched is not None:
        sched.step()
