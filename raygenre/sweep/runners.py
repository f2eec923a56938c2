"""The trial body: the one loop (`train.train_loop`), run by one of two runners.

- One worker (the default: a CPU core or two, one GPU or a fraction of one): the loop runs inside
  the Tune trial's own process, as Ray's Train guide advises for trials that fit one device. One
  process starts per trial, and checkpoints are Tune's own (`tune.report`), so Tune's retention
  and `ResultGrid` / `ExperimentAnalysis` see them.
- N workers (`--workers-per-trial N`): the Tune trial starts a Ray Train `TorchTrainer` whose N
  workers run the same loop under DDP (a trial spanning several GPUs or machines). Train keeps
  those checkpoints in `<run folder>/_train/<trial_id>/` (Tune only sees their paths).

Each runner hands the loop a seam onto its own reporting, checkpoints and data. A trial that
stands for several cells (epoch-prefix members) also keeps, for each shorter member, the
checkpoint that member would be tested at (`MemberPins`).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from raygenre.grid.file import unpack
from raygenre.grid.objective import Objective, best_epoch
from raygenre.paths import RunPaths, epoch_dir
from raygenre.storage import Location
from raygenre.sweep.cluster import CPU_FOR_MISSING_GPU
from raygenre.sweep.feed import HeldSplit, torch_batches
from raygenre.sweep.plan import Plan
from raygenre.training.loop import META_FILE, read_meta, train_loop


class MemberPins:
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
            if pin_epoch(name) not in needed:
                (self.folder / name).rmtree()


def pin_epoch(name: str) -> int | None:
    m = re.fullmatch(r"epoch_(\d+)", name)
    return int(m.group(1)) if m else None


def _node() -> str:
    """Where a trial ran: on a cluster, cells.csv shows how trials spread."""
    return ray.get_runtime_context().get_node_id()[:12]


class _RaySeam:
    """What both seams share: the latest checkpoint's folder, where each epoch ran, and the
    copies kept for shorter members."""

    def __init__(self, pins: MemberPins | None) -> None:
        self.pins = pins
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

    def _stamp(self, metrics: dict[str, Any], checkpoint: Path | None) -> dict[str, Any]:
        """The epoch's metrics with where it ran; keeps a member's copy before the report."""
        if checkpoint is not None and self.pins is not None:
            self.pins.update(checkpoint)
        return {**metrics, "node": self.node, "pid": os.getpid()}


class TuneSeam(_RaySeam):
    """The loop inside the Tune trial's own process."""

    rank = 0
    numbered_rows = True  # HeldSplit's batches carry their row numbers

    def __init__(self, datasets: dict[str, Any], device: torch.device,
                 pins: MemberPins | None) -> None:
        super().__init__(pins)
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
        metrics = self._stamp(metrics, checkpoint)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint)
                    if checkpoint is not None else None)


class TrainSeam(_RaySeam):
    """The loop on one of a data-parallel trial's Ray Train workers."""

    def __init__(self, pins: MemberPins | None) -> None:
        import ray.train.torch

        super().__init__(pins)
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
        metrics = self._stamp(metrics, checkpoint)
        if checkpoint is None:
            ray.train.report(metrics)
            return
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint),
                         checkpoint_dir_name=epoch_dir(metrics["epoch"]))


def train_worker(config: dict[str, Any]) -> None:
    """A Ray Train worker's function: the loop, with its pins rebuilt from plain values."""
    config = dict(config)
    spec = config.pop("_pins", None)
    # A spec without "epoch": a trial started when every member was judged at its best epoch.
    pins = (MemberPins(Location(spec["folder"]), spec["members"],
                       Objective(spec["metric"], spec["mode"], spec.get("epoch", "best")))
            if spec else None)
    train_loop(config, TrainSeam(pins))


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


def train_trial(config: dict[str, Any], train_ds: Any, val_ds: Any, runtime: dict[str, Any],
                plan: Plan, paths: RunPaths, objective: Objective) -> None:
    """Tune's trainable: one Tune trial, which may stand for several cells of the grid
    (epoch-prefix members sharing its first epochs; `gridfile.unpack`)."""
    hp, _variant, members = unpack(config)
    trial_id = tune.get_context().get_trial_id()
    loop_config = {**hp, **runtime}
    pins = (MemberPins(paths.members(trial_id), members, objective)
            if len(set(members)) > 1 else None)
    if not plan.data_parallel:
        device = trial_device(trial_id, plan.use_gpu)
        train_loop(loop_config, TuneSeam({"train": train_ds, "val": val_ds}, device, pins))
        return
    _data_parallel(trial_id, loop_config, pins, train_ds, val_ds, plan, paths, objective)


def _data_parallel(trial_id: str, loop_config: dict[str, Any], pins: MemberPins | None,
                   train_ds: Any, val_ds: Any, plan: Plan, paths: RunPaths,
                   objective: Objective) -> None:
    """The loop on `plan.workers` Ray Train workers (DDP), as a Train run named by the trial
    id: a restored trial reruns this and Train reloads its latest checkpoint."""
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    if pins is not None:
        loop_config = {**loop_config, "_pins": {
            "folder": pins.folder.uri, "members": pins.members, "metric": objective.metric,
            "mode": objective.mode, "epoch": objective.epoch}}
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=loop_config,
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

