"""`python -m raygenre.grid NAME`: run one sweep (or `all`, the study's pipeline).

A thin layer over the engine `raygenre.run` uses too: it parses the command line into
`RunOptions`, calls `engine.execute`, and turns what that raises into one line and an exit
status (EPILOG lists them)."""

from __future__ import annotations

import argparse
import atexit
import importlib.metadata
import logging
import os
import shlex
import sys
import threading
from typing import NoReturn

from raygenre.config import PRESETS, ConfigError
from raygenre.errors import DataError, Interrupted, NoResults
from raygenre.grid.file import list_grids, load_grid, resolve_base
from raygenre.grid.options import RunOptions
from raygenre.paths import default_cache, default_storage
from raygenre.sweep.engine import execute

EPILOG = """\
examples:
  python -m raygenre.grid --list                       the grids, their cells and questions
  python -m raygenre.grid batch_epoch --smoke          a few 1-2 epoch cells, in minutes
  python -m raygenre.grid batch_epoch --data ~/gtzan   your own GTZAN-style folder
  python -m raygenre.grid batch_epoch --resume         continue an interrupted sweep
  python -m raygenre.grid batch_epoch --resume auto    continue it, or start it if none
  python -m raygenre.grid batch_epoch --logger mlflow  each cell in MLflow (RESULTS/mlflow)
  python -m raygenre.grid all --stages cnn,activations two stages of the study's pipeline

exit status:
  0    done (the path of its summary is printed last)
  1    the run failed: the data cannot be used, or every trial failed (cells.csv says why)
  2    usage: a bad option, an unknown or invalid grid, a run folder this command may not
       use as asked
  130  interrupted (Ctrl-C): nothing is lost; the same command plus --resume continues

From Python: raygenre.run("batch_epoch", smoke=True) (docs/api.md).
"""


def version() -> str:
    try:
        return importlib.metadata.version("raygenre")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raygenre.grid",
                                description="Run a raygenre sweep (grids/NAME.yaml) with Ray Tune.",
                                epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"raygenre {version()}")
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
                   help="shrink the grid to a few 1-2 epoch cells on a small data sample")
    p.add_argument("--preset", choices=["auto", *PRESETS], default="auto",
                   help="auto: 'cpu' on the built-in data without a GPU, else 'study' "
                        "(the study's exact 201x552 spectrogram)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="auto",
                   help="continue an interrupted sweep; --resume auto: continue it if its run "
                        "folder exists, else start it (a notebook cell that is re-run after "
                        "a disconnect); either refuses a run whose config changed")
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
    p.add_argument("--checkpoint-every", type=int, default=1, metavar="K",
                   help="checkpoint every K epochs (and at each trial's last, and wherever the "
                        "sweep judges or may stop a trial): about K times less written to the "
                        "bucket; a resume then redoes up to K-1 epochs (default 1)")
    p.add_argument("--logger", action="append", metavar="mlflow|wandb",
                   help="also log each cell (its config and per-epoch metrics) to MLflow "
                        "(default store RESULTS/mlflow, or $MLFLOW_TRACKING_URI) or W&B; "
                        "repeat or comma-separate for both (needs the [mlflow] extra, or "
                        "wandb)")
    return p


def options(args: argparse.Namespace, argv: list[str]) -> RunOptions:
    """The parsed command line as the engine takes it (and as `raygenre.run` builds it)."""
    return RunOptions(
        grid=args.name, data=args.data, smoke=args.smoke, results=args.results,
        storage=args.storage, cache=args.cache, seed=args.seed, replicates=args.replicates,
        resume=args.resume, fresh=args.fresh, preset=args.preset, grids=args.grids,
        stages=args.stages, split=args.split, address=args.address,
        workers_per_trial=args.workers_per_trial, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent,
        checkpoint_every=args.checkpoint_every, logger=args.logger,
        command=" ".join(["python -m raygenre.grid", *map(shlex.quote, argv)]))


def grid_listing(names: list[str], grids: str | None = None) -> str:
    """Each grid: its cells, the Tune trials they take (epoch-prefix cells share one), its
    question."""
    from raygenre.sweep.pipeline import STAGES

    rows = []
    for n in names:
        g = load_grid(n, grids=grids)
        trials = len(g.trial_plans(resolve_base(g, "study", None)))
        rows.append(f"{n:<16} {g.n_cells:>4} cells  {trials:>4} trials  {g.description}")
    rows.append(f"{'all':<16} {len(STAGES):>4} stages {'':>13}  the study's pipeline "
                f"({', '.join(STAGES)}), each stage from the winners before it")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """The command; returns its exit status (see EPILOG)."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)  # a usage error exits here, with status 2
    if args.resume not in (False, True, "auto") and args.name is None:
        # `--resume batch_epoch`: the optional value took the grid name.
        args.name, args.resume = args.resume, True
    if args.list:
        try:
            print(grid_listing(list_grids(args.grids), args.grids))
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if not args.name:
        print("usage: python -m raygenre.grid NAME [options]   (--list shows the grids, "
              "--help the options)", file=sys.stderr)
        return 2
    try:
        out = execute(options(args, argv))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (DataError, NoResults) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"[grid] {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # a Ctrl-C before the trials (data, Ray's start) or a second one
        print("[grid] interrupted; a sweep that had started can be continued with the same "
              "command plus --resume", file=sys.stderr)
        return 130
    print(f"[grid] done: {out if out.suffix == '.md' else out / 'summary.md'}")
    return 0


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
