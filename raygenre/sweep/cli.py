"""`python -m raygenre.grid NAME`: run one sweep (or `all`, the study's pipeline).

A thin layer over the engine `raygenre.run` uses too: it parses the command line into
`RunOptions`, calls `engine.execute`, and turns what that raises into one line and an exit
status (EPILOG lists them)."""

from __future__ import annotations

import argparse
import importlib.metadata
import shlex
import sys
from typing import NoReturn

from raygenre.config import ConfigError
from raygenre.errors import DataError, Interrupted, NoResults
from raygenre.grid.file import list_grids, load_grid
from raygenre.grid.options import RunOptions, cli_arguments, option_fields
from raygenre.grid.resolved import resolve
from raygenre.sweep import quick_exit
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
    """The command line: the grid's NAME, --list and --version, then every option of
    RunOptions (grid.options.cli_arguments: each field there is a flag here)."""
    p = argparse.ArgumentParser(prog="python -m raygenre.grid",
                                description="Run a raygenre sweep (grids/NAME.yaml) with Ray Tune.",
                                epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"raygenre {version()}")
    p.add_argument("name", nargs="?", help="grid name (see --list), a path to a grid .yaml "
                                           "file, or 'all' for the study's pipeline")
    p.add_argument("--list", action="store_true", help="list the grids and exit")
    for flag, kwargs in cli_arguments():
        p.add_argument(flag, **kwargs)
    return p


def options(args: argparse.Namespace, argv: list[str]) -> RunOptions:
    """The parsed command line as the engine takes it (and as `raygenre.run` builds it)."""
    return RunOptions(grid=args.name, **{f.name: getattr(args, f.name) for f in option_fields()},
                      command=" ".join(["python -m raygenre.grid", *map(shlex.quote, argv)]))


def grid_listing(names: list[str], grids: str | None = None) -> str:
    """Each grid: its cells, the Tune trials they take (epoch-prefix cells share one), its
    question."""
    from raygenre.sweep.pipeline import STAGES

    rows = []
    for n in names:
        g = load_grid(n, grids=grids)
        trials = len(resolve(g, "study", None).plans)
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
    """End the command once its work is written: Python's own exit (threads joined, every exit
    hook run), then out without tearing torch's and Ray's modules down (sweep/quick_exit.py)."""
    quick_exit.arm(code)
    sys.exit(code)


def console() -> None:
    """The `raygenre` command: `raygenre batch_epoch ...` is `python -m raygenre.grid ...`."""
    exit_now(main())
