"""The trial body: the one loop (`training.loop.train_loop`), run by one of two runners.

- One worker (the default: a CPU core or two, one GPU or a fraction of one): the loop runs inside
  the Tune trial's own process, as Ray's Train guide advises for trials that fit one device. One
  process starts per trial, and checkpoints are Tune's own (`tune.report`), so Tune's retention
  and `ResultGrid` / `ExperimentAnalysis` see them.
- N workers (`--workers-per-trial N`): the Tune trial starts a Ray Train `TorchTrainer` whose N
  workers run the same loop under DDP (a trial spanning several GPUs or machines). Train keeps
  those checkpoints in `<run folder>/_train/<trial_id>/` (Tune only sees their paths).

Each runner hands the loop its config and runtime facts, typed and side by side, and a seam onto
its own reporting, checkpoints and data. A trial that stands for several cells (epoch-prefix
members) also keeps, for each shorter member, the checkpoint that member would be tested at
(`MemberCheckpoints`). With `--checkpoint-every k` the loop skips the checkpoints between every
k-th epoch, never one the sweep will judge, test or stop a trial at (`MustKeep`).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from raygenre.config import Config
from raygenre.grid.file import unpack
from raygenre.grid.objective import Objective, best_epoch
from raygenre.grid.resolved import ResolvedSweep
from raygenre.paths import RunPaths, epoch_dir
from raygenre.storage import Location
from raygenre.sweep.cluster import CPU_FOR_MISSING_GPU
from raygenre.sweep.feed import HeldSplit, torch_batches
from raygenre.sweep.plan import Plan
from raygenre.training.builder import Runtime
from raygenre.training.checkpoints import META_FILE, read_meta
from raygenre.training.loop import train_loop


class MemberCheckpoints:
    """Keeps the test checkpoint of each shorter member of a shared trial.

    A member of e epochs is judged and tested at its epoch e (or, judged at its best epoch,
    its best among its first e: what it would be if run alone). Tune keeps the trial's best and
    latest checkpoints only, so epoch e's checkpoint, or one that is the best so far while a
    shorter member's last epoch is still ahead, is copied to
    `<run folder>/members/<trial_id>/epoch_NNNN/`; copies that no member can need any more
    are removed. Stateless: each update reads the history from the checkpoint it is
    handed, so it is right after a restore too.
    """

    def __init__(self, folder: Location, members: list[int], objective: Objective) -> None:
        self.folder, self.members = folder, list(members)
        self.boundaries = sorted({m for m in members if m < max(members)})
        self.objective = objective

    def needed(self, history: list[dict[str, Any]]) -> set[int]:
        """Epochs whose checkpoints some member will be tested at, given the history so far."""
        epoch = history[-1]["epoch"]
        m, mode = self.objective.metric, self.objective.mode
        if self.objective.epoch != "best":
            return {b for b in self.boundaries if b <= epoch}
        best = [best_epoch(history, m, mode, b) for b in self.boundaries if b <= epoch]
        if any(b > epoch for b in self.boundaries):
            best.append(best_epoch(history, m, mode))  # may stay the best until then
        return {h["epoch"] for h in best if h is not None}  # None: no finite value yet

    def update(self, checkpoint: Path) -> None:
        history = read_meta(checkpoint)["history"]
        needed = self.needed(history)
        epoch = history[-1]["epoch"]
        if epoch in needed:
            (self.folder / epoch_dir(epoch)).put_dir(checkpoint, last=META_FILE)
        for name in self.folder.listdir():
            if kept_epoch(name) not in needed:
                (self.folder / name).rmtree()

    def spec(self) -> dict[str, Any]:
        """Plain values, for a Ray Train worker (`from_spec`)."""
        return {"folder": self.folder.uri, "members": self.members,
                "metric": self.objective.metric, "mode": self.objective.mode,
                "epoch": self.objective.epoch}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> MemberCheckpoints:
        # A spec without "epoch": a trial started when every member was judged at its best.
        return cls(Location(spec["folder"]), spec["members"],
                   Objective(spec["metric"], spec["mode"], spec.get("epoch", "best")))


def kept_epoch(name: str) -> int | None:
    m = re.fullmatch(r"epoch_(\d+)", name)
    return int(m.group(1)) if m else None


def asha_rungs(sweep: ResolvedSweep) -> tuple[int, ...]:
    """The epochs at which the grid's ASHA may stop a trial (and judge it there); () without
    ASHA."""
    grid = sweep.grid
    if not grid.asha:
        return ()
    return rung_epochs(grid.grace_period, grid.reduction_factor, sweep.max_epochs)


def rung_epochs(grace_period: int, reduction_factor: float, max_t: int) -> tuple[int, ...]:
    """grace_period times each power of the reduction factor below max_t, as Ray 2.60's
    one-bracket ASHA lays out its rungs (`ray.tune.schedulers.async_hyperband._Bracket`, in
    its arithmetic; tests/test_checkpoint_every.py checks the two agree by ASHA's decisions)."""
    count = int(np.log(max_t / grace_period) / np.log(reduction_factor) + 1)
    return tuple(sorted({math.ceil(grace_period * reduction_factor ** k)
                         for k in range(count)}))


@dataclass(frozen=True)
class MustKeep:
    """The epochs a trial must checkpoint even between `--checkpoint-every`'s: a rung ASHA may
    stop it at (its test and resume then start there), its best so far when the grid judges at
    the best epoch (Tune's retention keeps the best of the checkpoints it is given), and what a
    shorter member of a shared trial will be tested at."""

    objective: Objective
    rungs: tuple[int, ...] = ()
    members: MemberCheckpoints | None = None

    def __call__(self, history: list[dict[str, Any]]) -> bool:
        epoch = history[-1]["epoch"]
        if epoch in self.rungs:
            return True
        if self.objective.epoch == "best":
            best = best_epoch(history, self.objective.metric, self.objective.mode)
            if best is not None and best["epoch"] == epoch:
                return True
        return self.members is not None and epoch in self.members.needed(history)

    def spec(self) -> dict[str, Any]:
        """Plain values, for a Ray Train worker (`from_spec`)."""
        return {"objective": [self.objective.metric, self.objective.mode,
                              self.objective.epoch],
                "rungs": list(self.rungs),
                "members": self.members.spec() if self.members is not None else None}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> MustKeep:
        members = spec["members"]
        return cls(Objective(*spec["objective"]), tuple(spec["rungs"]),
                   MemberCheckpoints.from_spec(members) if members is not None else None)


def _node() -> str:
    """Where a trial ran: on a cluster, cells.csv shows how trials spread."""
    return ray.get_runtime_context().get_node_id()[:12]


class _RaySeam:
    """What both seams share: the latest checkpoint's folder, where each epoch ran, which
    epochs must be checkpointed, and the copies kept for shorter members."""

    def __init__(self, keep: MustKeep) -> None:
        self.keep = keep
        self.node = _node()

    def _latest(self) -> Any:
        raise NotImplementedError

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        checkpoint = self._latest()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as d:
            yield Path(d)

    def must_keep(self, history: list[dict[str, Any]]) -> bool:
        return self.keep(history)

    def _keep_member_copies(self, checkpoint: Path | None) -> None:
        """Before the report: Tune may drop this checkpoint once it has the next one."""
        if checkpoint is not None and self.keep.members is not None:
            self.keep.members.update(checkpoint)

    def _where_it_ran(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {**metrics, "node": self.node, "pid": os.getpid()}


class TuneSeam(_RaySeam):
    """The loop inside the Tune trial's own process."""

    rank = 0
    numbered_rows = True  # HeldSplit's batches carry their row numbers

    def __init__(self, datasets: dict[str, Any], device: torch.device, keep: MustKeep) -> None:
        super().__init__(keep)
        self.datasets, self.device = datasets, device
        self.held: dict[str, HeldSplit] = {}

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def batches(self, split: str, batch_size: int, shuffle_seed: int | None) -> Any:
        if split not in self.held:
            self.held[split] = HeldSplit(self.datasets[split])
        return self.held[split].batches(batch_size, shuffle_seed)

    def _latest(self) -> Any:
        return tune.get_checkpoint()

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        self._keep_member_copies(checkpoint)
        tune.report(self._where_it_ran(metrics),
                    checkpoint=tune.Checkpoint.from_directory(checkpoint)
                    if checkpoint is not None else None)


class TrainSeam(_RaySeam):
    """The loop on one of a data-parallel trial's Ray Train workers."""

    def __init__(self, keep: MustKeep) -> None:
        import ray.train.torch

        super().__init__(keep)
        self.rank = ray.train.get_context().get_world_rank()
        self.device = ray.train.torch.get_device()

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def batches(self, split: str, batch_size: int, shuffle_seed: int | None) -> Any:
        shard = ray.train.get_dataset_shard(split)
        seed = None if shuffle_seed is None else shuffle_seed + self.rank
        return torch_batches(shard, batch_size, seed)

    def _latest(self) -> Any:
        return ray.train.get_checkpoint()

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        self._keep_member_copies(checkpoint)
        metrics = self._where_it_ran(metrics)
        if checkpoint is None:
            ray.train.report(metrics)
            return
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint),
                         checkpoint_dir_name=epoch_dir(metrics["epoch"]))


def train_worker(config: dict[str, Any]) -> None:
    """A Ray Train worker's function: the loop, its config, runtime facts and what it must
    keep rebuilt from the plain values `_data_parallel` hands Train."""
    train_loop(Config.from_dict(config["config"], "trial config"),
               Runtime.from_dict(config["runtime"], "trial runtime"),
               TrainSeam(MustKeep.from_spec(config["keep"])))


def trial_device(trial_id: str, use_gpu: bool) -> torch.device:
    """Where a one-process trial trains: its GPU when Ray gave it one. A GPU that torch cannot
    see fails the trial (a GPU node with a broken driver must not train on its CPU unnoticed),
    unless the sweep allows it (CPU_FOR_MISSING_GPU: Ray's fake GPU nodes in tests); the trial
    then trains on the CPU and says so in its log."""
    if not use_gpu:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    seen = f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}"
    if os.environ.get(CPU_FOR_MISSING_GPU) != "1":
        raise RuntimeError(f"trial {trial_id} was given a GPU by Ray but torch sees none "
                           f"({seen}); {CPU_FOR_MISSING_GPU}=1 trains such trials on the CPU")
    print(f"[trial {trial_id}] given a GPU by Ray ({seen}) but torch sees none: training on "
          f"the CPU ({CPU_FOR_MISSING_GPU}=1)", file=sys.stderr, flush=True)
    return torch.device("cpu")


def train_trial(config: dict[str, Any], train_ds: Any, val_ds: Any, runtime: Runtime,
                plan: Plan, paths: RunPaths,
                objective: Objective, rungs: tuple[int, ...] = ()) -> None:
    """Tune's trainable: one Tune trial, which may stand for several cells of the grid
    (epoch-prefix members sharing its first epochs; `grid.file.unpack`). What Tune hands it
    becomes the loop's typed config and runtime facts here, side by side."""
    hp, _variant, members = unpack(config)
    trial_id = tune.get_context().get_trial_id()
    cfg = Config.from_dict(hp, f"trial {trial_id}'s config")
    keep = MustKeep(objective, tuple(rungs),
                    MemberCheckpoints(paths.members(trial_id), members, objective)
                    if len(set(members)) > 1 else None)
    if not plan.data_parallel:
        device = trial_device(trial_id, plan.use_gpu)
        train_loop(cfg, runtime, TuneSeam({"train": train_ds, "val": val_ds}, device, keep))
        return
    _data_parallel(trial_id, cfg, runtime, keep, train_ds, val_ds, plan, paths, objective)


def _data_parallel(trial_id: str, cfg: Config, runtime: Runtime, keep: MustKeep,
                   train_ds: Any, val_ds: Any, plan: Plan, paths: RunPaths,
                   objective: Objective) -> None:
    """The loop on `plan.workers` Ray Train workers (DDP), as a Train run named by the trial
    id: a restored trial reruns this and Train reloads its latest checkpoint."""
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trainer = TorchTrainer(
        train_worker,
        # Plain values (Train may record its config): rebuilt typed by `train_worker`.
        train_loop_config={"config": cfg.to_dict(), "runtime": runtime.to_dict(),
                           "keep": keep.spec()},
        scaling_config=ray.train.ScalingConfig(num_workers=plan.workers, use_gpu=plan.use_gpu,
                                               resources_per_worker=plan.worker_resources()),
        datasets={"train": train_ds, "val": val_ds},
        # Same rows in the same order every epoch: the per-epoch shuffle is then seeded alone.
        # Validation is not split: every worker sees all of it and the metric sums agree.
        dataset_config=ray.train.DataConfig(
            datasets_to_split=["train"],
            execution_options=ExecutionOptions(preserve_order=True)),
        run_config=ray.train.RunConfig(
            name=trial_id, storage_path=str(paths.train_storage),
            callbacks=[TuneReportCallback()],
            # Train's checkpoints are not Tune's: Train keeps them by the grid's objective (the
            # best, and always the latest) and raygenre's results read them from this folder.
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=objective.metric,
                checkpoint_score_order=objective.mode),
            failure_config=ray.train.FailureConfig(max_failures=2)),
    )
    trainer.fit()

