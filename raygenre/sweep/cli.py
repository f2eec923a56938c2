"""`python -m raygenre.grid NAME`: run one sweep (or `all`, the study's pipeline)."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import threading
from pathlib import Path
from typing import NoReturn

from raygenre.config import PRESETS, ConfigError
from raygenre.errors import DataError, Interrupted, NoResults
from raygenre.gridfile import list_grids, load_grid, resolve_base
from raygenre.paths import RunPaths, default_cache, default_storage
from raygenre.storage import Location


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m raygenre.grid",
                                description="Run a raygenre sweep (grids/NAME.yaml) with Ray Tune.")
    p.add_argument("name", nargs="?", help="grid name (see --list), a path to a grid .yaml "
                                           "file, or 'all' for the study's pipeline")
    p.add_argument("--list", action="store_true", help="list the grids and exit")
    p.add_argument("--grids", help="a folder of your own grid files (NAME.yaml), looked up "
                                   "before the built-in ones")
    p.add_argument("--stages", help="with NAME 'all': comma-separated stages to run, in order "
                                    "(default: the study's seven)")
    p.add_argument("--data", help="GTZAN-style folder <root>/<genre>/<file>, local or a bucket "
                                  "URI (s3://...), or a built-in set: builtin (synthetic "
                                  "genres, the default) or builtin:music (rendered scores of "
                                  "real music; needs the [music] extra)")
    p.add_argument("--split", help="fixed split lists (names relative to the data root): a "
                                   "folder of train/val/test lists, train=FILE,val=FILE,test=FILE,"
                                   " or a CSV with file and split columns; default: a random "
                                   "split by track from --seed")
    p.add_argument("--results", default="results", help="tables and plots go to RESULTS/<grid>/")
    p.add_argument("--storage", help=f"Ray run folder: a local or NFS path, or an s3:// or gs:// "
                                     f"URI; on a multi-node cluster, one every node sees "
                                     f"(default {default_storage()})")
    p.add_argument("--cache", help=f"generated and prepared data: a folder, or a bucket URI "
                                   f"shared by every machine (default {default_cache()})")
    p.add_argument("--seed", type=int, help="seed for split, init, dropout, shuffle and drawn "
                                            "axes (default: the grid's, 0)")
    p.add_argument("--replicates", type=int,
                   help="train every configuration under N seeds (the sweep's seed and the N-1 "
                        "after it) on the same split; tables aggregate them and the winner is "
                        "the best mean (default: the grid's 'replicates:', 1)")
    p.add_argument("--smoke", action="store_true",
                   help="shrink the grid to a few 1-2 epoch trials on a small data sample")
    p.add_argument("--preset", choices=["auto", *PRESETS], default="auto",
                   help="auto: 'cpu' on the built-in data without a GPU, else 'study' "
                        "(the study's exact 201x552 spectrogram)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    p.add_argument("--fresh", action="store_true",
                   help="delete an existing run of this grid in --storage and start over")
    p.add_argument("--address", help="Ray address to connect to (e.g. 'auto'); default: start one")
    p.add_argument("--workers-per-trial", type=int, default=1,
                   help="Ray Train workers per trial (DDP; a trial over several GPUs or "
                        "machines); default 1: the loop runs in the Tune trial itself")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: sized from "
                                                        "the largest suitable node)")
    p.add_argument("--gpus-per-trial", type=float,
                   help="GPUs per trial; a fraction (0.25) packs several trials on one GPU; "
                        "0 runs CPU trials on a GPU cluster (default: one trial per 4 of the "
                        "CPUs that go with a GPU, at most 4 per GPU)")
    p.add_argument("--max-concurrent", type=int, help="cap on trials running at once")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> Path:
    """Run what the command asks; returns the file to read first."""
    from raygenre.sweep.cluster import check_storage, cluster_nodes, joined_address, start_ray
    from raygenre.sweep.pipeline import run_pipeline
    from raygenre.sweep.run_state import refuse_or_restore
    from raygenre.sweep.tuner import run_sweep, set_up

    if args.resume and args.fresh:
        raise ConfigError("--resume and --fresh contradict each other: pick one")
    if args.name == "all":
        return run_pipeline(args)
    if args.stages:
        raise ConfigError("--stages goes with the pipeline: python -m raygenre.grid all --stages "
                          "cnn,activations")
    grid = load_grid(args.name, args.seed, args.grids, args.replicates)
    if args.smoke:
        grid = grid.smoke()
    paths = RunPaths(storage=Location.parse(args.storage or default_storage()),
                     name=grid.name + ("-smoke" if args.smoke else ""),
                     results_root=Path(args.results).resolve())
    paths.storage.check_reachable()
    # Refuse before any work if a run exists and the user did not say what to do with it.
    restoring = refuse_or_restore(paths, args.resume, args.fresh)
    start_ray(args.address)
    joined = bool(joined_address(args.address))
    check_storage(paths.storage, joined)
    nodes = cluster_nodes(joined)
    run_sweep(set_up(grid, args, nodes), args, paths, nodes, restoring,
              trials_done=stop_ray_soon)
    return paths.results / "summary.md"


def grid_listing(names: list[str], grids: str | None = None) -> str:
    """Each grid: its trials, the runs they take (epoch-prefix trials share one), its question."""
    from raygenre.sweep.pipeline import STAGES

    rows = []
    for n in names:
        g = load_grid(n, grids=grids)
        runs = len(g.runs(resolve_base(g, "study", None)))
        rows.append(f"{n:<16} {g.n_trials:>4} trials {runs:>4} runs  {g.description}")
    rows.append(f"{'all':<16} {len(STAGES):>4} stages       the study's pipeline "
                f"({', '.join(STAGES)}), each stage from the winners before it")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        try:
            print(grid_listing(list_grids(args.grids), args.grids))
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if not args.name:
        print("usage: python -m raygenre.grid NAME [options]   (--list shows the grids)",
              file=sys.stderr)
        return 2
    try:
        out = run(args)
    except (ConfigError, DataError, NoResults) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"[grid] {e}", file=sys.stderr)
        return 130
    else:
        print(f"[grid] done: {out}")
        return 0
    finally:
        stop_ray()


_stopping: threading.Thread | None = None


def stop_ray_soon() -> None:
    """Stop Ray in a thread while this command writes its results (which need no Ray): the stop
    mostly waits for Ray's processes to end (~1.1 s here, bench/overhead.py)."""
    global _stopping
    if _stopping is None:
        _stopping = threading.Thread(target=stop_ray, name="raygenre-ray-stop")
        _stopping.start()


def stop_ray() -> None:
    """Stop the Ray this command started (or leave the cluster it joined) now: at exit, Ray's
    own hook first sleeps 0.5 s for worker log lines, which this command does not forward
    (0.7 s less from the last line to the prompt, bench/overhead.py)."""
    global _stopping
    if _stopping is not None and _stopping is not threading.current_thread():
        _stopping.join()
        _stopping = None
        return
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def exit_now(code: int) -> NoReturn:
    """End the command once its work is written: flush, run the exit hooks, then leave without
    Python's teardown of torch's and Ray's ~3 000 modules, which took ~1 s after the last line
    (bench/overhead.py). Nothing is left to finalise: Ray is stopped, files are closed, and the
    threads still running are waited for first."""
    for t in threading.enumerate():
        if t is not threading.current_thread() and not t.daemon:
            t.join()
    logging.shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def console() -> None:
    """The `raygenre` command: `raygenre batch_epoch ...` is `python -m raygenre.grid ...`."""
    exit_now(main())
