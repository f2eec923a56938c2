"""One run as `RunOptions` ask for it: the work behind both the command line and
`raygenre.run`, from the checks that need no Ray to Ray stopped again."""

from __future__ import annotations

from pathlib import Path

from raygenre.errors import DataError
from raygenre.grid.file import load_grid
from raygenre.grid.options import RunOptions
from raygenre.paths import RunPaths, default_storage
from raygenre.storage import Location, check_places
from raygenre.sweep import run_state
from raygenre.sweep.cluster import (
    check_storage,
    cluster_nodes,
    joined_address,
    ray_running,
    start_ray,
    stop_ray,
    stop_ray_soon,
)


def execute(opts: RunOptions) -> Path:
    """Run one sweep (or the pipeline, grid "all"); returns its results folder (the pipeline:
    pipeline.md). Raises ConfigError, DataError, NoResults or Interrupted with a message fit
    to print as it is. Ray is stopped again if this call started it; a Ray the caller had
    already started is left running."""
    opts.check()
    own_ray = not ray_running()
    try:
        if opts.grid == "all":
            from raygenre.sweep.pipeline import run_pipeline

            return run_pipeline(opts)
        return run_grid(opts, stop_ray_early=own_ray)
    finally:
        if own_ray:
            stop_ray()


def grid_paths(opts: RunOptions, name: str) -> RunPaths:
    return RunPaths(storage=Location.parse(opts.storage or default_storage()),
                    name=name + ("-smoke" if opts.smoke else ""),
                    results_root=opts.results_root)


def run_grid(opts: RunOptions, stop_ray_early: bool = False) -> Path:
    from raygenre.sweep.tuner import resolve_before_start, run_sweep, set_up

    grid = load_grid(opts.grid, opts.seed, opts.grids, opts.replicates)
    if opts.smoke:
        grid = grid.smoke()
    paths = grid_paths(opts, grid.name)
    check_places(paths.storage, opts.cache)
    # Refuse before any work if a run exists and the user did not say what to do with it.
    resume = run_state.resolve_resume(paths, opts.resume)
    if opts.resume == run_state.AUTO:
        what = "continuing the run" if resume else "no run yet, starting one"
        print(f"[grid] --resume auto: {what} in {paths.experiment}")
    run_state.refuse_other_data(paths, run_state.data_source(opts.data), resume, opts.fresh)
    restoring = run_state.refuse_or_restore(paths, resume, opts.fresh)
    check_data_path(opts.data)
    candidates = resolve_before_start(grid, opts)
    start_ray(opts.address)
    joined = bool(joined_address(opts.address))
    check_storage(paths.storage, joined)
    nodes = cluster_nodes(joined)
    # Results are written after the trials and need no Ray: a Ray of our own stops meanwhile.
    run_sweep(set_up(candidates, opts, nodes), opts, paths, restoring,
              trials_done=stop_ray_soon if stop_ray_early else None)
    return paths.results


def check_data_path(data: str | None) -> None:
    """A local --data folder that is not there fails now, not after Ray's start (seconds);
    what is in it is judged when it is read."""
    if data is None or data.startswith("builtin"):
        return
    root = Location.parse(data, "--data").local_path
    if root is not None and not root.exists():
        raise DataError(f"data path {root} does not exist")
    if root is not None and not root.is_dir():
        raise DataError(f"data path {root} is not a folder (expected <root>/<genre>/<file>)")
