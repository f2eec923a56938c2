"""`python -m raygenre.grid NAME`: run one sweep with Ray Tune, in parallel, with ASHA.

The only module that imports `ray.tune`. One Tune trial is a small driver function that runs a
Ray Train `TorchTrainer` over `train.train_func` (the Train-in-Tune pattern of Ray 2.60); the
prepared data is read once by Ray Data here and handed to every trial.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Light imports only: every trial's actor imports this module to find `_trial`, and each second
# of import here is paid once per trial. The heavy modules are imported where they are used.
from ray.tune.schedulers import ASHAScheduler  # trial actors import ray.tune anyway

from raygenre.config import (
    METRICS,
    PRESETS,
    Config,
    ConfigError,
    Grid,
    flat_trial_config,
    list_grids,
    load_grid,
    trial_deltas,
    validate,
)
from raygenre.paths import RunPaths, default_cache, default_storage
from raygenre.storage import Location, StorageError, check_shared, local_mirror_dir, mirror

if TYPE_CHECKING:
    from raygenre.data import Prepared

# Smoke runs: a deterministic sample small enough for tests (2 train tracks per genre, 2 segments
# each), still through every stage.
SMOKE_TRACKS_PER_GENRE = 4
SMOKE_SEGMENTS_PER_TRACK = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m raygenre.grid",
                                description="Run a raygenre sweep (grids/NAME.yaml) with Ray Tune.")
    p.add_argument("name", nargs="?", help="grid name (see --list), a path to a grid .yaml "
                                           "file, or 'all' for the study's pipeline")
    p.add_argument("--list", action="store_true", help="list the grids and exit")
    p.add_argument("--stages", help="with NAME 'all': comma-separated stages to run, in order "
                                    "(default: the study's seven)")
    p.add_argument("--data", help="GTZAN-style folder <root>/<genre>/<file>, local or a bucket "
                                  "URI (s3://...); default: the built-in set")
    p.add_argument("--results", default="results", help="tables and plots go to RESULTS/<grid>/")
    p.add_argument("--storage", help=f"Ray run folder: a local or NFS path, or an s3:// or gs:// "
                                     f"URI; on a multi-node cluster, one every node sees "
                                     f"(default {default_storage()})")
    p.add_argument("--cache", help=f"generated and prepared data: a folder, or a bucket URI "
                                   f"shared by every machine (default {default_cache()})")
    p.add_argument("--seed", type=int, help="seed for split, init, dropout, shuffle (default 0)")
    p.add_argument("--smoke", action="store_true",
                   help="shrink the grid to a few 1-2 epoch trials on a small data sample")
    p.add_argument("--preset", choices=["auto", *PRESETS], default="auto",
                   help="auto: 'cpu' on the built-in data without a GPU, else 'study' "
                        "(the study's exact 201x552 spectrogram)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    p.add_argument("--fresh", action="store_true",
                   help="delete an existing run of this grid in --storage and start over")
    p.add_argument("--address", help="Ray address to connect to (e.g. 'auto'); default: start one")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: sized here)")
    p.add_argument("--gpus-per-trial", type=float, help="GPU fraction per trial when GPUs exist")
    p.add_argument("--max-concurrent", type=int, help="cap on trials running at once")
    return p.parse_args(argv)


MANIFEST = "raygenre_run.json"  # what the run was started with, checked on --resume
ASHA_STATE = "asha_rungs.json"


class Interrupted(RuntimeError):
    """The sweep stopped before every trial finished; the run folder can be resumed."""


def _check_manifest(path: Location, now: dict[str, Any]) -> None:
    if not path.exists():
        return
    then = json.loads(path.read_text())
    diffs = [f"{k}: stored {then.get(k)!r}, now {now[k]!r}" for k in now
             if k != "grid_file" and then.get(k) != now[k]]
    if diffs:
        raise ConfigError(f"--resume: this command differs from the run stored in {path.parent} "
                          f"({'; '.join(diffs)}). Resume with the original grid and options, or "
                          f"start over with --fresh.")


@dataclass(frozen=True)
class Plan:
    """How trials use the cluster: printed so the user sees what runs in parallel and why."""

    concurrency: int
    trial_cpus: float  # the Tune trial's own driver process (it only waits on the trainer)
    worker: dict[str, float]  # Ray Train worker resources
    threads: int  # torch threads per worker
    use_gpu: bool
    workers: int = 1  # Train workers per trial (data parallel); one is right below ~1 GPU/trial

    def describe(self) -> str:
        kind = f"{self.worker.get('GPU', 0):g} GPU" if self.use_gpu else "CPU"
        return (f"{self.concurrency} trial(s) at once, each {self.workers} Train worker(s) "
                f"({self.worker['CPU']:g} CPU, {kind}, {self.threads} torch thread(s))")


def plan_resources(cluster: dict[str, float], n_trials: int, cpus_per_trial: float | None,
                   gpus_per_trial: float | None, max_concurrent: int | None) -> Plan:
    cpus, gpus = cluster.get("CPU", 1.0), cluster.get("GPU", 0.0)
    # Tune's trial driver only waits on its trainer, but must hold some CPU (0 raises). Kept
    # tiny: with 0.1, two drivers on one 1-CPU node left 0.8 there, a 0.9 worker fit nowhere
    # and the sweep waited forever (seen with two nodes).
    driver = 0.01
    headroom = 0.1  # per trial, left free for Ray Data and Ray's own actors
    if gpus and gpus_per_trial != 0:
        gpu = gpus_per_trial or 1.0
        concurrency = int(gpus // gpu)
        cpt = cpus_per_trial or max(1.0, math.floor(cpus / max(concurrency, 1)))
        concurrency = min(concurrency, int(cpus // cpt))
        worker = {"CPU": cpt - driver - headroom, "GPU": gpu}
    elif gpus_per_trial:
        # No GPU yet, but asked for: an autoscaling cluster starts with none. Trials wait for
        # the GPU nodes their requests make the autoscaler add; --max-concurrent caps them.
        cpt = cpus_per_trial or 1.0
        concurrency = n_trials
        worker = {"CPU": cpt - driver - headroom, "GPU": gpus_per_trial}
    else:
        # Small machines: one core per trial is faster in total than several threads per trial
        # (conv training scales sub-linearly in threads); big ones: two keeps per-trial latency.
        cpt = cpus_per_trial or (1.0 if cpus <= 4 else 2.0)
        concurrency = int(cpus // cpt)
        worker = {"CPU": cpt - driver - headroom}
    concurrency = max(1, min(concurrency, n_trials, max_concurrent or n_trials))
    return Plan(concurrency, driver, worker, max(1, int(cpt)), bool(worker.get("GPU")))


def _trial(config: dict[str, Any], train_ds: Any, val_ds: Any, runtime: dict[str, Any],
           paths: RunPaths, plan: Plan) -> None:
    """One Tune trial: a Ray Train run named by the trial id, so a restored trial resumes it."""
    import ray.train
    from ray import tune
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from raygenre.train import train_func

    trial_id = tune.get_context().get_trial_id()
    hp = {k: v for k, v in flat_trial_config(config).items() if k != "variant"}
    trainer = TorchTrainer(
        train_func,
        train_loop_config={**hp, **runtime},
        scaling_config=ray.train.ScalingConfig(num_workers=plan.workers, use_gpu=plan.use_gpu,
                                               resources_per_worker=plan.worker),
        datasets={"train": train_ds, "val": val_ds},
        # Same rows in the same order every epoch: the per-epoch shuffle is then seeded alone.
        # With one worker nothing is split: a split costs a coordinator process per dataset
        # per trial (seconds of start-up each), and validation is never split (every worker
        # sees all of it and the metric sums agree).
        dataset_config=ray.train.DataConfig(
            datasets_to_split=["train"] if plan.workers > 1 else [],
            execution_options=ExecutionOptions(preserve_order=True)),
        run_config=ray.train.RunConfig(
            name=trial_id, storage_path=str(paths.train_storage),
            callbacks=[TuneReportCallback()],
            # The best epoch (for test evaluation) and the latest (for resume): Ray keeps the
            # top num_to_keep by score and, always, the latest.
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute="val/acc",
                checkpoint_score_order="max"),
            failure_config=ray.train.FailureConfig(max_failures=2)),
    )
    trainer.fit()


def _trial_outcome(trial: Any, finished: bool = False) -> str | None:
    """completed / stopped by ASHA / error, or None while unfinished. `finished`: Tune said so
    (in on_trial_complete the status is not yet TERMINATED)."""
    if trial.status == "ERROR":
        return "error"
    if trial.status != "TERMINATED" and not finished:
        return None
    done = (trial.last_result or {}).get("epoch", 0)
    epochs = flat_trial_config(trial.config)["epochs"]
    return "completed" if done >= epochs else "stopped by ASHA"


def _progress_callback(n_trials: int, concurrency: int, metric: str, mode: str) -> Any:
    """One line per event: what ran, what ASHA stopped, the best so far, a rough ETA.

    Counts come from Tune's trial list each time, so they stay right after a resume.
    """
    from ray import tune

    class Progress(tune.Callback):
        def setup(self, **info: Any) -> None:
            self.t0 = time.time()
            self.best: tuple[float, str] | None = None

        def _line(self, event: str, trials: list, finishing: Any = None) -> None:
            outcomes = [_trial_outcome(t, finished=t is finishing) for t in trials]
            done = [o for o in outcomes if o]
            counts = {k: done.count(k) for k in ("completed", "stopped by ASHA", "error")}
            walls = [(t.last_result or {}).get("time_total_s", 0.0)
                     for t, o in zip(trials, outcomes, strict=True) if o]
            elapsed = time.time() - self.t0
            left = n_trials - len(done)
            eta = ""
            if walls and left:
                mean = sum(walls) / len(walls)
                eta = f", ETA <= {left * mean / concurrency / 60:.1f} min"
            best = f"best {metric} {self.best[0]:.3f} ({self.best[1]})" if self.best else ""
            print(f"[tune {elapsed / 60:5.1f} min] {event:<38} | {len(done)}/{n_trials} "
                  f"done ({', '.join(f'{v} {k}' for k, v in counts.items() if v) or '-'}) | "
                  f"{best}{eta}", flush=True)

        def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001
            value = result.get(metric)
            if value is not None and (self.best is None or (
                    value > self.best[0] if mode == "max" else value < self.best[0])):
                self.best = (value, trial.trial_id)
            shown = f"{value:.3f}" if value is not None else "-"
            epochs = flat_trial_config(trial.config)["epochs"]
            self._line(f"{trial.trial_id} epoch {result.get('epoch')}/{epochs}"
                       f" {metric} {shown}", trials)

        def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
            self._line(f"{trial.trial_id} {_trial_outcome(trial, finished=True)}", trials,
                       finishing=trial)

        def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
            self._line(f"{trial.trial_id} ERROR (see trials.csv)", trials)

    return Progress()


def _tensorboard_callback(logdir: Path, labels: list[str]) -> Any:
    """TensorBoard event files with the metric names of trials.csv (`val/acc`, ...), one run
    per trial named by its id and swept values, stepped by epoch (Tune's own logger prefixes
    every name with `ray/tune/` and steps by report)."""
    from ray import tune

    class TensorBoard(tune.Callback):
        def setup(self, **info: Any) -> None:
            self.writers: dict[str, Any] = {}

        def _writer(self, trial: Any) -> Any:
            if trial.trial_id not in self.writers:
                from tensorboardX import SummaryWriter

                cfg = flat_trial_config(trial.config)
                shown = [f"{k}={cfg.get(k)}" for k in labels]  # a variant shows its name
                name = ",".join([trial.trial_id, *shown]).replace("/", "_").replace(" ", "")
                self.writers[trial.trial_id] = SummaryWriter(str(logdir / name))
            return self.writers[trial.trial_id]

        def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001
            if result.get("epoch") is None:
                return
            w = self._writer(trial)
            for m in (*METRICS, "lr"):
                if result.get(m) is not None:
                    w.add_scalar(m, result[m], int(result["epoch"]))
            w.flush()

        def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
            w = self.writers.pop(trial.trial_id, None)
            if w is not None:
                w.close()

        on_trial_error = on_trial_complete

        def on_experiment_end(self, trials, **info):  # noqa: ANN001
            for w in self.writers.values():
                w.close()
            self.writers.clear()

    return TensorBoard()


class ResumableASHA(ASHAScheduler):
    """ASHA whose rung records survive `Tuner.restore`.

    Tune rebuilds the scheduler from the pickle taken when the sweep started, so without this a
    resumed sweep forgets every rung and lets the next trial at each rung through uncontested.
    Each decision is written to a JSON file in the run folder and read back on first use.
    """

    def __init__(self, state_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._state_file = state_file
        self._loaded = False

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._loaded = False  # an unpickled copy may be older than the file

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        path = Location(self._state_file)
        if not path.exists():
            return
        saved = json.loads(path.read_text())
        for bracket, rungs in zip(self._brackets, saved["brackets"], strict=True):
            for (milestone, recorded), (saved_milestone, saved_recorded) in zip(
                    bracket._rungs, rungs, strict=True):
                if milestone != saved_milestone:
                    raise ValueError(f"{path}: rung {saved_milestone} does not match this "
                                     f"sweep's ASHA settings (rung {milestone})")
                recorded.update(saved_recorded)
        self._num_stopped = saved["num_stopped"]

    def _save(self) -> None:
        state = {"num_stopped": self._num_stopped, "brackets": [
            [[m, {k: float(v) for k, v in rec.items()}] for m, rec in b._rungs]
            for b in self._brackets]}
        Location(self._state_file).write_text(json.dumps(state, indent=1))

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._load()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self._load()
        if trial.trial_id not in self._trial_info:  # restored while running
            super().on_trial_add(tune_controller, trial)
        action = super().on_trial_result(tune_controller, trial, result)
        self._save()
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._load()
        if trial.trial_id not in self._trial_info:
            super().on_trial_add(tune_controller, trial)
        super().on_trial_complete(tune_controller, trial, result)
        self._save()


def run(args: argparse.Namespace) -> Path:
    if args.resume and args.fresh:
        raise ConfigError("--resume and --fresh contradict each other: pick one")
    if args.name == "all":
        return run_pipeline(args)
    if args.stages:
        raise ConfigError("--stages goes with the pipeline: python -m raygenre.grid all --stages "
                          "cnn,activations")
    grid = load_grid(args.name)
    if args.smoke:
        grid = grid.smoke()
    paths = RunPaths(storage=Location.parse(args.storage or default_storage()),
                     name=grid.name + ("-smoke" if args.smoke else ""),
                     results_root=Path(args.results).resolve())
    paths.storage.check_reachable()
    # Refuse before any work if a run exists and the user did not say what to do with it.
    restoring = _existing_run(paths, _manifest(grid, args, {}), args.resume, args.fresh)
    cluster = _start_ray(args)
    _check_storage(paths.storage, bool(_joined(args)))
    run_sweep(grid, args, paths, cluster, restoring)
    return paths.results


def _param_space(grid: Grid, base: Config) -> dict[str, Any]:
    from ray import tune

    space: dict[str, Any] = base.to_dict()
    for key, values in grid.axes.items():
        space[key] = tune.grid_search([list(v) if isinstance(v, tuple) else v for v in values])
    if grid.variants:
        # Tune crosses grid_search keys; a variant is one value of its own key, a dict that
        # flat_trial_config merges into the trial's config.
        space["variant"] = tune.grid_search(
            [json.loads(json.dumps(v)) for v in grid.variants])
    return space


def resolve_base(grid: Grid, preset: str, seed: int | None,
                 carried: dict[str, Any] | None = None) -> Config:
    """Defaults < preset < grid base < keys carried from a previous stage < --seed."""
    base = Config().replace(**PRESETS[preset]).replace(**grid.base).replace(**(carried or {}))
    if seed is not None:
        base = base.replace(seed=seed)
    validate(base, f"{grid.path}: base")
    for t in grid.trials():
        validate(base.replace(**trial_deltas(t)), f"{grid.path}: trial {t}")
    return base


def _check_batch_sizes(grid: Grid, base: Config, prepared: Prepared) -> None:
    n_train = prepared.counts["train"]
    for bs in sorted({t.get("batch_size", base.batch_size) for t in grid.trials()}):
        if bs > n_train:
            raise ConfigError(f"{grid.path}: batch_size {bs} is larger than the training split "
                              f"({n_train} segments); use a smaller batch or more data")


def _check_models(grid: Grid, base: Config, prepared: Prepared) -> None:
    """Build every trial's input and model without memory (meta device): a shape error shows
    now, with the trial named, not after an hour of other trials."""
    import torch

    from raygenre.features import feature_shape
    from raygenre.models import build_model

    seen = set()
    for t in grid.trials():
        cfg = base.replace(**trial_deltas(t))
        key = (cfg.model, cfg.features, cfg.n_fft, cfg.mel_n_fft, cfg.hop_length, cfg.n_mels,
               cfg.hidden, cfg.cnn_channels, cfg.fc_width)
        if key in seen:
            continue
        seen.add(key)
        try:
            shape = feature_shape(cfg, prepared.segment_samples)
            with torch.device("meta"):
                build_model(cfg, shape, len(prepared.genres))
        except (ValueError, RuntimeError) as e:
            raise ConfigError(f"{grid.path}: trial {t}: the model cannot be built on this "
                              f"input: {e}") from e


def _band_stats(grid: Grid, base: Config, prepared: Prepared) -> dict[str, Any]:
    """Train-split statistics for every representation that a trial normalises per band."""
    import pyarrow.parquet as pq

    from raygenre.data import to_tensor
    from raygenre.features import band_stats, feature_key

    wanted = {}
    for t in grid.trials():
        cfg = base.replace(**trial_deltas(t))
        if cfg.band_norm:
            wanted.setdefault(feature_key(cfg), cfg)
    if not wanted:
        return {}
    def batches():  # streamed: the train split need not fit in the driver's memory
        for b in pq.ParquetFile(prepared.split_path("train")).iter_batches(64, columns=["x"]):
            yield to_tensor(b.column("x"))

    return {k: band_stats(cfg, batches()) for k, cfg in wanted.items()}


def _joined(args: argparse.Namespace) -> str | None:
    """The Ray address this sweep joins (--address, else RAY_ADDRESS), or None: its own."""
    return args.address or os.environ.get("RAY_ADDRESS") or None


def _start_ray(args: argparse.Namespace) -> dict[str, float]:
    import ray
    import ray.data

    for noisy in ("ray.data", "ray.train", "ray.tune"):  # our progress lines say what matters
        logging.getLogger(noisy).setLevel(logging.WARNING)
    runtime_env = None
    # Without --address (or RAY_ADDRESS) a sweep starts its own Ray instance, even if another
    # runs on this machine: Ray would otherwise join the last one `ray start` (or a test
    # cluster) made, and a sweep could land on, and die with, somebody else's instance.
    joined = _joined(args)
    if joined and not args.address:
        print(f"[ray] joining RAY_ADDRESS={joined} (unset it to run on a Ray of its own)")
    if joined and not joined.startswith("ray://"):
        from ray._private.services import canonicalize_bootstrap_address

        # Workers are told the cluster's address, as for a local instance below: Train's
        # helpers otherwise look it up and can pick another instance on the same machine.
        try:
            address = canonicalize_bootstrap_address(joined)
        except ConnectionError as e:  # "auto" and no cluster on this machine
            raise ConfigError(f"--address {joined}: no Ray cluster found ({e}). Start "
                              f"one (ray start --head, or ray up cluster.yaml) or drop "
                              f"--address to run on this machine alone") from e
        if address:
            # Ray waits minutes on an address where nothing listens; a plain connect tells now.
            host, _, port = address.rpartition(":")
            try:
                socket.create_connection((host, int(port)), timeout=5).close()
            except (OSError, ValueError) as e:
                raise ConfigError(f"--address {joined}: no Ray cluster to connect to "
                                  f"({e}). Start one (ray start --head, or ray up "
                                  f"cluster.yaml) or drop --address to run on this machine "
                                  f"alone") from e
            runtime_env = {"env_vars": {"RAY_ADDRESS": address}}
    if not joined:
        port = _free_port()
        runtime_env = {"env_vars": {
            # A local instance has no spot nodes to watch: Train's preemption watcher would
            # only add a process start (~1.5 s of CPU) to every trial.
            "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
            # Ray Train's helpers look their cluster up by address discovery, which fails
            # ("multiple active Ray instances") when a second sweep runs on this machine, and
            # their trials then wait forever. So the GCS gets a known port and workers its
            # address.
            "RAY_ADDRESS": f"{ray.util.get_node_ip_address()}:{port}"}}
        os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    try:
        ctx = ray.init(address=joined or "local", include_dashboard=True,
                       dashboard_host="127.0.0.1", configure_logging=True,
                       logging_level="WARNING", runtime_env=runtime_env,
                       # Worker logs stay in the session's log folder (printed on errors).
                       log_to_driver=False)
    finally:
        os.environ.pop("RAY_GCS_SERVER_PORT", None)
    ray.data.DataContext.get_current().enable_progress_bars = False
    if ctx.dashboard_url:
        print(f"[ray] dashboard: http://{ctx.dashboard_url}")
    return ray.cluster_resources()


# `ray up` leaves the cluster's config on the head: its autoscaler may add machines.
AUTOSCALER_CONFIG = Path("~/ray_bootstrap_config.yaml").expanduser()


def _check_storage(storage: Location, joined: bool) -> None:
    """Before any trial: on several machines the run folder must be one they all see."""
    import ray

    ips = [n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")]
    why = check_shared(storage, ips, may_grow=joined and AUTOSCALER_CONFIG.exists())
    try:
        storage.mkdir()
    except OSError as e:  # no credentials, no such bucket, read-only mount...
        raise StorageError(f"--storage {storage}: cannot create the run folder there "
                           f"({type(e).__name__}: {e})") from e
    print(f"[grid] storage {storage}: {why}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _existing_run(paths: RunPaths, manifest: dict[str, Any], resume: bool, fresh: bool) -> bool:
    """Decide, before any work, what to do with a run already in the folder: True to restore."""
    from ray import tune

    if not paths.experiment.exists():
        if resume:
            raise ConfigError(f"--resume: no run of {paths.name!r} in {paths.experiment}")
        return False
    if fresh:
        paths.experiment.rmtree()
        return False
    if not resume:
        raise ConfigError(
            f"a run of {paths.name!r} already exists in {paths.experiment}. Continue it with "
            f"--resume, or start over with --fresh (deletes it).")
    if not tune.Tuner.can_restore(str(paths.experiment)):
        raise ConfigError(f"--resume: {paths.experiment} holds no restorable run; "
                          f"run without --resume (add --fresh to clear the folder)")
    _check_manifest(paths.experiment / MANIFEST, manifest)
    return True


def _manifest(grid: Grid, args: argparse.Namespace, carried: dict[str, Any]) -> dict[str, Any]:
    m = {"grid": grid.name, "grid_file": str(grid.path), "base": grid.base, "axes": grid.axes,
         "variants": list(grid.variants), "carried": carried, "seed": args.seed,
         "data": args.data, "smoke": args.smoke, "preset": args.preset}
    return json.loads(json.dumps(m))  # tuples -> lists, as read back


def run_sweep(grid: Grid, args: argparse.Namespace, paths: RunPaths, cluster: dict[str, float],
              restoring: bool, carried: dict[str, Any] | None = None) -> dict[str, Any]:
    """One sweep on a started Ray instance; returns its best.json."""
    from ray import tune

    from raygenre import report, synth
    from raygenre.data import prepare, ray_dataset

    carried = carried or {}
    # --cache s3://...: data sets are prepared into the local cache and shared through the
    # bucket, so each is prepared once for every machine; the bucket's copy is fetched first.
    cache_loc = Location.parse(args.cache, "--cache") if args.cache else None
    shared = cache_loc if cache_loc is not None and cache_loc.scheme else None
    cache = (default_cache() if cache_loc is None or shared else cache_loc.local_path).resolve()
    plan = plan_resources(cluster, grid.n_trials, args.cpus_per_trial, args.gpus_per_trial,
                          args.max_concurrent)
    preset = args.preset
    if preset == "auto":
        preset = "cpu" if (args.data is None and not plan.use_gpu) else "study"
    print(f"[grid] {paths.name}: {grid.description}")
    print(f"[grid] preset {preset!r}: {PRESETS[preset] or 'the study’s exact settings'}"
          + ("  (built-in data, no GPU; --preset study for 201x552)" if preset == "cpu" else ""))
    if carried:
        print(f"[grid] carried from earlier stages: {carried}")
    base = resolve_base(grid, preset, args.seed, carried)

    if args.data:
        data_loc = Location.parse(args.data, "--data")
        root = data_loc.local_path
        if root is None or data_loc.scheme:
            root = local_mirror_dir(cache, data_loc)
            print(f"[data] fetching {data_loc} -> {root} (only files not already there)")
            root = mirror(data_loc, root)
    else:
        try:
            root = synth.ensure_builtin(cache)
        except OSError as e:
            raise ConfigError(f"cache folder {cache} is not writable ({e}); "
                              f"choose another with --cache") from e
        print(f"[data] built-in set: {root}")
    sample = (SMOKE_TRACKS_PER_GENRE, SMOKE_SEGMENTS_PER_TRACK) if args.smoke else (None, None)
    prepared = prepare(root, cache, base, *sample, shared=shared)
    print(prepared.table_path.read_text(), end="")
    _check_batch_sizes(grid, base, prepared)
    _check_models(grid, base, prepared)

    how = f"ASHA on {grid.metric} ({grid.mode})" if grid.asha else "every trial in full"
    print(f"[grid] {grid.n_trials} trials, {how}; {plan.describe()}")
    if plan.use_gpu and not cluster.get("GPU"):
        print("[grid] no GPU in the cluster yet: trials wait for the autoscaler's GPU nodes")
    print(f"[grid] run folder: {paths.experiment}   results: {paths.results}")
    print(f"[grid] TensorBoard: tensorboard --logdir {paths.tensorboard}")

    t_data = time.time()
    datasets = {s: ray_dataset(prepared, s) for s in ("train", "val")}
    print(f"[grid] train and val splits in Ray's object store ({time.time() - t_data:.1f} s); "
          f"starting trials")
    runtime = {"num_classes": len(prepared.genres), "segment_samples": prepared.segment_samples,
               "threads": plan.threads, "band_stats": _band_stats(grid, base, prepared)}
    trainable = tune.with_resources(
        tune.with_parameters(_trial, train_ds=datasets["train"], val_ds=datasets["val"],
                             runtime=runtime, paths=paths, plan=plan),
        {"cpu": plan.trial_cpus})
    paths.experiment.mkdir()
    if not restoring:
        (paths.experiment / MANIFEST).write_text(
            json.dumps(_manifest(grid, args, carried), indent=1))
    progress = _progress_callback(grid.n_trials, plan.concurrency, grid.metric, grid.mode)
    t0 = time.time()
    if restoring:
        print(f"[grid] resuming {paths.experiment}")
        tuner = tune.Tuner.restore(str(paths.experiment), trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        scheduler = None
        if grid.asha:
            scheduler = ResumableASHA(str(paths.experiment / ASHA_STATE), time_attr="epoch",
                                      max_t=grid.max_epochs(base),
                                      grace_period=grid.grace_period,
                                      reduction_factor=grid.reduction_factor)
        tuner = tune.Tuner(
            trainable, param_space=_param_space(grid, base),
            tune_config=tune.TuneConfig(metric=grid.metric, mode=grid.mode, scheduler=scheduler,
                                        max_concurrent_trials=plan.concurrency),
            run_config=tune.RunConfig(name=paths.experiment.name,
                                      storage_path=str(paths.experiment.parent),
                                      failure_config=tune.FailureConfig(max_failures=1),
                                      callbacks=[progress, _tensorboard_callback(
                                          paths.tensorboard, grid.labels)], verbose=0))
    results = tuner.fit()
    wall = time.time() - t0
    # Against the grid's count, not len(results): Tune creates trials as slots free up, so
    # after a Ctrl-C the trials it never started are in no result at all.
    finished = results.num_terminated + results.num_errors
    if finished < grid.n_trials:
        raise Interrupted(
            f"sweep interrupted: {grid.n_trials - finished} of {grid.n_trials} trials "
            f"unfinished; "
            f"nothing was lost. Resume with the same command plus --resume "
            f"(run folder {paths.experiment}).")
    return report.write_results(grid, base, results, paths, prepared, wall_s=wall,
                                preset=preset, carried=carried)


# The study's order: each stage starts from the winners of those before it.
STAGES = ("baseline", "random_mlp", "cnn", "activations", "optimizers", "batch_epoch",
          "regularization")


def run_pipeline(args: argparse.Namespace) -> Path:
    """`all`: the stages in order, each from the previous winners' carried keys. Finished
    stages are skipped and an interrupted one resumes, so re-running `all` continues it."""
    from raygenre import report

    stages = args.stages.split(",") if args.stages else list(STAGES)
    grids = [load_grid(s) for s in stages]  # every name and file checked before any work
    if args.smoke:
        grids = [g.smoke() for g in grids]
    top = "all" + ("-smoke" if args.smoke else "")
    storage = Location.parse(args.storage or default_storage())
    storage.check_reachable()
    results_root = Path(args.results).resolve()
    if args.fresh:
        (storage / top).rmtree()
        shutil.rmtree(results_root / top, ignore_errors=True)
    cluster = _start_ray(args)
    _check_storage(storage, bool(_joined(args)))
    carried: dict[str, Any] = {}
    rows = []
    for grid in grids:
        paths = RunPaths(storage=storage, name=f"{top}/{grid.name}", results_root=results_root)
        done = paths.results / "best.json"
        best = json.loads(done.read_text()) if done.exists() else None
        if best is not None and best.get("carried") == json.loads(json.dumps(carried)):
            print(f"[all] {grid.name}: finished earlier (val/acc {best['val/acc']:.3f}); "
                  f"skipped")
        else:
            restoring = False
            if paths.experiment.exists():
                try:
                    restoring = _existing_run(paths, _manifest(grid, args, carried),
                                              resume=True, fresh=False)
                except ConfigError as e:  # an earlier stage changed: this one starts over
                    print(f"[all] {grid.name}: the stored run does not match ({e}); "
                          f"starting it over")
                    paths.experiment.rmtree()
            best = run_sweep(grid, args, paths, cluster, restoring, carried)
        rows.append(best)
        carried = {**carried, **{k: best["config"][k] for k in grid.carry}}
    out = report.write_pipeline(rows, results_root, top)
    print(f"[all] done: {out}")
    return out


def grid_listing(names: list[str]) -> str:
    rows = []
    for n in names:
        g = load_grid(n)
        rows.append(f"{n:<16} {g.n_trials:>4} trials  {g.description}")
    rows.append(f"{'all':<16} {len(STAGES):>4} stages  the study's pipeline ({', '.join(STAGES)}),"
                f" each stage from the winners before it")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    from raygenre.data import DataError

    args = parse_args(argv)
    if args.list:
        print(grid_listing(list_grids()))
        return 0
    if not args.name:
        print("usage: python -m raygenre.grid NAME [options]   (--list shows the grids)",
              file=sys.stderr)
        return 2
    try:
        out = run(args)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"[grid] {e}", file=sys.stderr)
        return 130
    print(f"[grid] done: {out}/summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
