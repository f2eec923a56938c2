"""One sweep on a started Ray instance: plan, data, checks, `Tuner.fit`, results."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from raygenre import report
from raygenre.config import PRESETS, Config, ConfigError
from raygenre.data import ledger
from raygenre.data.prepared import Prepared
from raygenre.errors import Interrupted
from raygenre.grid.file import CELLS_KEY, Grid, unpack
from raygenre.grid.options import RunOptions
from raygenre.grid.resolved import ResolvedSweep, TrialPlan, describe_trials, resolve_each
from raygenre.paths import RunPaths
from raygenre.sweep import inputs, loggers, run_state
from raygenre.sweep.asha import ResumableASHA, stopped_trials
from raygenre.sweep.callbacks import (
    PlannedTrial,
    Progress,
    TensorBoard,
    quiet_trial_tracebacks,
)
from raygenre.sweep.clock import WallClock
from raygenre.sweep.estimate import LONG_MIN, Estimate, cheaper, estimate
from raygenre.sweep.feed import ray_dataset
from raygenre.sweep.plan import Node, Plan, nodes_from_ray, plan_resources
from raygenre.sweep.runners import asha_rungs, train_trial
from raygenre.sweep.tune_results import trial_dirname, trial_records
from raygenre.training.builder import Runtime
from raygenre.training.checkpoints import checkpoint_bytes


def choose_preset(asked: str, data: str | None, plan: Plan) -> tuple[str, str]:
    """(preset, why): 'cpu' on the built-in data without a GPU, else the study's settings."""
    if asked != "auto":
        return asked, "asked for with --preset"
    if "cpu" in possible_presets(asked, data) and not plan.use_gpu:
        return "cpu", "built-in data, no GPU; --preset study for the study's 201x552"
    return "study", ("a GPU per trial" if inputs.is_builtin(data) else "your data (--data)") + (
        "; on a CPU, --preset cpu is ~20x cheaper" if not plan.use_gpu else "")


def possible_presets(asked: str, data: str | None) -> list[str]:
    """Every preset `choose_preset` can pick for this command, before the cluster (and so
    whether trials get a GPU) is known."""
    if asked != "auto":
        return [asked]
    return ["cpu", "study"] if inputs.is_builtin(data) else ["study"]


# What a sweep resolves to under each preset it can get (grid.resolved.resolve_each).
Candidates = dict[str, ResolvedSweep | ConfigError]


def resolve_before_start(grid: Grid, opts: RunOptions,
                         carried: dict[str, Any] | None = None) -> Candidates:
    """The sweep resolved, every cell judged, under each preset this command can get, before
    Ray starts: a grid that fails under all of them fails now, seconds sooner and with no Ray
    to stop. One that fails under only one preset fails in `set_up`, once the cluster says
    which preset it gets."""
    return resolve_each(grid, possible_presets(opts.preset, opts.data), opts.seed, carried)


@dataclass(frozen=True)
class Setup:
    """A sweep settled before any trial: its resolved cells and trials, plan and data."""

    sweep: ResolvedSweep  # the grid's cells as checked configs under the chosen preset
    plan: Plan
    preset_why: str
    prepared: Prepared
    fingerprint: dict[str, Any]  # everything that shapes its numbers (run_state.fingerprint)
    cost: Estimate | None = None  # what each trial's epoch costs here, for the time-left line


def set_up(candidates: Candidates, opts: RunOptions, nodes: list[Node]) -> Setup:
    """Plan, preset, data and every check of the data that can fail before a trial starts."""
    # Trials do not depend on the preset (it changes the input resolution only).
    n_trials = next(len(r.plans) for r in candidates.values() if isinstance(r, ResolvedSweep))
    plan = plan_resources(nodes, n_trials, opts.workers_per_trial, opts.cpus_per_trial,
                          opts.gpus_per_trial, opts.max_concurrent)
    preset, why = choose_preset(opts.preset, opts.data, plan)
    sweep = candidates[preset]
    if isinstance(sweep, ConfigError):
        raise sweep
    grid = sweep.grid
    print(f"[grid] {grid.name}: {grid.description}")
    print(f"[grid] preset {preset!r}: {PRESETS[preset] or 'the study’s exact settings'} ({why})")
    if sweep.carried:
        print(f"[grid] carried from earlier stages: {sweep.carried}")
    prepared = inputs.prepare_data(opts.data, inputs.caches(opts.cache), sweep.base, opts.smoke,
                                   opts.split)
    print(prepared.table_path.read_text(), end="")
    if opts.smoke:
        n = prepared.counts["train"]
        capped = sweep.capped(n)
        if capped.grid != grid or capped.base != sweep.base:
            print(f"[grid] --smoke: batch sizes capped at the sample's {n} training segments "
                  f"({sweep.batch_sizes()} -> {capped.batch_sizes()})")
        sweep = capped
    inputs.check_batch_sizes(sweep, prepared)
    inputs.check_models(sweep, prepared)
    cost = None
    if not opts.smoke:
        cost = estimate(sweep.plans, prepared, plan)
        if cost is None:
            print("[grid] estimate: none (GPU trials, and no GPU in this process to time them)")
        else:
            print(f"[grid] {cost.describe(plan.concurrency, grid.asha)}")
            if cost.minutes > LONG_MIN:
                print(f"[grid] that is {cost.minutes / 60:.1f} h here; cheaper: "
                    f"{cheaper(preset, plan)}")
    return Setup(sweep, plan, why, prepared,
                 run_state.fingerprint(sweep, prepared, plan, opts.smoke), cost)


def run_sweep(setup: Setup, opts: RunOptions, paths: RunPaths, restoring: bool,
              trials_done: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run a set-up sweep (or resume it) and write its results; returns its best.json.
    `trials_done` is called once every trial has ended and its records are read: what follows
    (test evaluation, tables, plots) needs no Ray."""
    sweep, plan, plans = setup.sweep, setup.plan, setup.sweep.plans
    grid = sweep.grid
    # The test ledger also lives beside the run folders: it travels with the storage.
    prepared = ledger.at(setup.prepared, paths.storage)
    rungs = asha_rungs(sweep)  # checkpointed whatever --checkpoint-every says
    trackers = _open_run(setup, opts, paths, restoring, rungs)
    t_data = time.time()
    train_ds, val_ds = (ray_dataset(prepared, s) for s in ("train", "val"))
    print(f"[grid] train and val splits in Ray's object store ({time.time() - t_data:.1f} s); "
          f"starting trials")
    runtime = Runtime(**inputs.runtime_facts(sweep, prepared, plan.threads),
                      checkpoint_every=opts.checkpoint_every)
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, train_ds=train_ds, val_ds=val_ds, runtime=runtime,
                             plan=plan, paths=paths, objective=grid.objective,
                             rungs=rungs),
        plan.trial_resources())
    # Our progress lines say what the user needs; Tune's own tables would repeat them (and point
    # TensorBoard at its driver folder, not at ours). Tune snapshots its state after every
    # checkpoint here (num_to_keep is small): that is what a resume needs, not a bottleneck to
    # warn about.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    quiet_trial_tracebacks()
    with WallClock(paths.wall_state, resumed=restoring) as clock:
        if restoring:
            print(f"[grid] resuming {paths.experiment}")
            tuner = tune.Tuner.restore(str(paths.experiment), trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            tuner = tune.Tuner(trainable, param_space=_param_space(sweep.base, plans),
                               tune_config=_tune_config(sweep, paths, plan),
                               run_config=_run_config(grid, paths, plan, planned_trials(setup),
                                                      trackers))
        results = tuner.fit()
    wall = clock.wall()
    # Each trial's own record says whether it ended: Tune's statuses after a Ctrl-C do not (it
    # may mark a trial it stopped as terminated), and the trials it never started are in no
    # result.
    finished = _finished(results, paths, grid)
    if finished < len(plans):
        raise Interrupted(
            f"sweep interrupted: {len(plans) - finished} of {len(plans)} trials unfinished; "
            f"nothing was lost. Resume with the same command plus --resume (in Python: "
            f"resume=True) (run folder {paths.experiment}).")
    records = trial_records(results, paths, grid.objective, plan.data_parallel)
    if trials_done is not None:
        trials_done()
    facts = report.SweepFacts(
        name=paths.name, preset=sweep.preset, preset_why=setup.preset_why,
        data=f"`{opts.data}`" if opts.data else "the built-in set",
        data_source=run_state.data_source(opts.data),
        run_folder=str(paths.experiment), plan=plan.describe(),
        trials=describe_trials(plans, grid.n_cells),
        concurrency=plan.concurrency, wall_s=wall.total_s, wall_words=wall.words(),
        wall_known=not wall.untimed_runs, command=opts.recorded_command)
    best = report.write_results(grid, sweep.base, records, paths, prepared, facts,
                                sweep.carried, setup.fingerprint)
    share = best["training_share"]
    print(f"[grid] training share {share:.2f}: summed epoch compute over {wall.words()} of "
          f"sweep wall x {plan.concurrency} slot(s)" if share is not None else
          f"[grid] wall {wall.words()}; training share not known")
    return best


def _open_run(setup: Setup, opts: RunOptions, paths: RunPaths, restoring: bool,
              rungs: tuple[int, ...]) -> list[tune.Callback]:
    """Check a resumed run against this command, or write a new run's manifest and open its
    trackers; then say what the sweep will do and where. Returns a new run's trackers."""
    grid, plan = setup.sweep.grid, setup.plan
    trackers: list[tune.Callback] = []
    if restoring:
        run_state.check_manifest(paths, setup.fingerprint)
        logged_to = loggers.check_resume(paths, opts.logger)
    else:
        # The trackers first: one that cannot be reached fails before the run folder is made.
        trackers, logged_to = loggers.build(opts.logger, paths, grid.name,
                                            grid.objective)
        run_state.write_manifest(paths, setup.fingerprint, run_state.data_source(opts.data))
        loggers.record(paths, opts.logger, logged_to)
        cleared = run_state.clear_tensorboard(paths)
        if cleared:
            print(f"[grid] TensorBoard: {cleared} run(s) of an earlier sweep removed from "
                  f"{paths.tensorboard}")
    how = (f"ASHA on {grid.metric} ({grid.mode}) over trials" if grid.asha
           else "every trial in full")
    print(f"[grid] {describe_trials(setup.sweep.plans, grid.n_cells)}")
    print(f"[grid] {how}; {plan.describe()}")
    # The nodes alive: on a `ray up` cluster trials were sized for what it can grow to.
    if plan.waits_for_gpus(nodes_from_ray(ray.nodes())):
        print("[grid] no GPU in the cluster yet: trials wait for the autoscaler's GPU nodes")
    print(f"[grid] run folder: {paths.experiment}   results: {paths.results}")
    traffic = checkpoint_traffic(setup.sweep.plans, setup.prepared, paths,
                                 opts.checkpoint_every, rungs)
    print(f"[grid] {traffic}")
    print(f"[grid] TensorBoard: tensorboard --logdir {paths.tensorboard}")
    for line in logged_to:
        print(f"[grid] {line}")
    return trackers


def checkpoint_traffic(plans: tuple[TrialPlan, ...], prepared: Prepared, paths: RunPaths,
                       every: int = 1, rungs: tuple[int, ...] = ()) -> str:
    """What the trials will write to the run folder (a bucket's traffic and bill): a checkpoint
    per trial every `every` epochs (--checkpoint-every), at each trial's last and at ASHA's
    `rungs`, its size estimated from each model's parameters and what a checkpoint holds
    (`checkpoints.checkpoint_bytes`: ~0.68 GB for the study's CNN1 at 201x552)."""
    n_classes, n_val = len(prepared.genres), prepared.counts["val"]
    per_pass = n_val * n_classes * 4  # a validation pass's predictions, kept from then on
    sizes, total, epochs, saved, pinned = [], 0, 0, 0, 0
    for p in plans:
        cfg = p.config
        size0 = checkpoint_bytes(cfg, prepared.segment_samples, n_classes, n_val, 0)
        sizes.append(size0 + per_pass)
        written = [e for e in range(1, cfg.epochs + 1)
                   if e % every == 0 or e == cfg.epochs or e in rungs]
        total += size0 * len(written) + per_pass * sum(written)
        epochs, saved = epochs + cfg.epochs, saved + len(written)
        # A shorter cell sharing the trial keeps a copy of its best epoch (more than one while
        # that best moves).
        pinned += sum(size0 + per_pass * m for m in sorted(set(p.members))[:-1])
    low, high = _bytes(min(sizes)), _bytes(max(sizes))
    extra = f", and at least {_bytes(pinned)} of copies kept for shorter cells" if pinned else ""
    where = "the bucket" if paths.storage.bucket else "the run folder"
    size = low if low == high else f"{low} to {high}"
    if every == 1:
        return (f"checkpoints to {where}: {size} per trial per epoch, ~{_bytes(total)} in all "
                f"({epochs} epochs over {len(plans)} trial(s){extra}); a resume redoes "
                f"at most the epoch under way")
    # Between every k-th epoch a trial still checkpoints where it is judged or tested (a new
    # best, with judge_epoch best; a shorter cell's last epoch): hence "at least".
    return (f"checkpoints to {where} every {every} epochs (--checkpoint-every) and at each "
            f"trial's last{' and ASHA rung' if rungs else ''} epoch: {size} each, at least "
            f"~{_bytes(total)} in all ({saved} checkpoints over {epochs} epochs of "
            f"{len(plans)} trial(s){extra}); a resume repeats up to {every - 1} "
            f"epoch(s) besides the one under way")


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} GB"


def _finished(results: tune.ResultGrid, paths: RunPaths, grid: Grid) -> int:
    """Trials that ended: failed, ran all their epochs, or were stopped by ASHA (its decisions
    are kept in the run folder)."""
    stopped = stopped_trials(str(paths.asha_state)) if grid.asha else set()
    return sum(r.error is not None or Path(r.path).name in stopped
               or (r.metrics or {}).get("epoch", 0) >= unpack(r.config)[0]["epochs"]
               for r in results)


def _param_space(base: Config, plans: tuple[TrialPlan, ...]) -> dict[str, Any]:
    """The base config, and one grid_search axis over the trials (each a dict of its cells'
    deltas, variant name and member epochs, merged back by `grid.file.unpack`)."""
    return {**base.to_dict(), CELLS_KEY: tune.grid_search([p.tune_value() for p in plans])}


def _tune_config(sweep: ResolvedSweep, paths: RunPaths, plan: Plan) -> tune.TuneConfig:
    grid = sweep.grid
    scheduler = None
    if grid.asha:
        scheduler = ResumableASHA(str(paths.asha_state), time_attr="epoch",
                                  max_t=sweep.max_epochs, grace_period=grid.grace_period,
                                  reduction_factor=grid.reduction_factor)
    # reuse_actors: a finished trial's process takes the next trial, so torch and Ray are
    # imported once per slot, not once per trial (0.4-0.5 s of fixed cost per trial instead of 3.0,
    # bench/trial_cost.py). Safe here because the loop sets every global it depends on (seed,
    # threads, deterministic flags) at its start; tests/test_engine.py checks that trials in a
    # reused process give the numbers of fresh ones, bit for bit.
    return tune.TuneConfig(metric=grid.metric, mode=grid.mode, scheduler=scheduler,
                           max_concurrent_trials=plan.concurrency,
                           trial_dirname_creator=trial_dirname, reuse_actors=True)


def planned_trials(setup: Setup) -> list[PlannedTrial]:
    """Every trial of the sweep with its epochs and, where the estimate timed it, its seconds
    per epoch here (else 1: the time-left line then weighs all epochs alike)."""
    plans = setup.sweep.plans
    costs = setup.cost.epoch_s if setup.cost is not None else (1.0,) * len(plans)
    return [PlannedTrial(p.tune_value(), p.config.epochs, c)
            for p, c in zip(plans, costs, strict=True)]


def _run_config(grid: Grid, paths: RunPaths, plan: Plan, planned: list[PlannedTrial],
                trackers: list[tune.Callback]) -> tune.RunConfig:
    return tune.RunConfig(
        name=paths.experiment.name, storage_path=str(paths.experiment.parent),
        # The best epoch by the grid's objective (for the test) and the latest (for resume):
        # Tune keeps the top num_to_keep by score and, always, the latest.
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=1, checkpoint_score_attribute=grid.metric,
            checkpoint_score_order=grid.mode),
        # A trial whose process dies (a lost node, a killed worker) restarts from its latest
        # checkpoint; one that fails on its own fails again and is recorded as an error.
        failure_config=tune.FailureConfig(max_failures=2),
        # The trackers (--logger) are Tune's callbacks too: kept with the run, so a resume logs
        # where the sweep started (raygenre.sweep.loggers).
        callbacks=[Progress(planned, plan.concurrency, grid.metric, grid.mode),
                   TensorBoard(paths.tensorboard, grid.labels, grid.objective),
                   *trackers],
        # Silent (verbose=0), but named: in a notebook Tune would pick its Jupyter reporter,
        # whose first act is clear_output(), wiping the cell's plan and progress lines.
        progress_reporter=tune.CLIReporter(),
        verbose=0)
