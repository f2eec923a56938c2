"""What one run of raygenre is asked to do: the options the command line and the Python API
both build, and the only thing the engine (raygenre.sweep) reads.

Light on purpose (no torch, no Ray): `import raygenre` in a notebook stays quick, and the
checks here run before anything heavy is imported.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import os
import re
import shlex
import textwrap
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import Field, dataclass, field, fields
from numbers import Real
from pathlib import Path
from typing import Any

from raygenre.config import PRESETS, ConfigError
from raygenre.paths import default_cache, default_storage

# The defaults the command line shows in --help; `as_command` leaves them out.
DEFAULT_RESULTS = "results"

# --logger: the trackers a sweep can log to (raygenre.sweep.loggers), and what each needs
# installed: (module, the pip command that brings it, the least version). TensorBoard files are
# always written.
LOGGERS = ("mlflow", "wandb")
LOGGER_NEEDS: dict[str, tuple[str, str, tuple[int, ...] | None]] = {
    "mlflow": ("mlflow", "pip install 'raygenre[mlflow]' (or mlflow-skinny)", None),
    # Several trials log at once from the driver: several W&B runs open in one process
    # (reinit="create_new"), which came in wandb 0.19.10.
    "wandb": ("wandb", "pip install 'wandb>=0.19.10'", (0, 19, 10)),
}


def option(default: Any = None, help: str | Callable[[], str] = "", *, cli: dict | None = None,
           minimum: int | None = None, command_line_only: bool = False) -> Any:
    """A field of RunOptions that is an option: the command line's --flag and `raygenre.run`'s
    keyword of the same name, both built from it (`cli_arguments`, `api_signature`). Its type
    annotation types the flag (bool: a switch; int, float: a number) and the check of a value
    from Python (`RunOptions.check`). `help`: a string, or a function for one that names a
    default known only when the command runs; `cli`: argparse keywords beyond those (choices,
    nargs, metavar, ...); `minimum`: the least value a number may take; `command_line_only`:
    not a keyword of `raygenre.run`."""
    return field(default=default, metadata={
        "help": help, "cli": cli or {}, "minimum": minimum, "api": not command_line_only})


NOT_AN_OPTION = {"option": False}  # field metadata of the fields that are no option


@dataclass(frozen=True)
class RunOptions:
    """One sweep (or, with grid "all", the study's pipeline), as `python -m raygenre.grid`
    takes it: each field but `grid` and `command` is the option of the same name
    (`workers_per_trial` is `--workers-per-trial`), declared here once with its type, default
    and help; `docs/cli.md` says more of what each does."""

    # A grid name, a path to a grid .yaml file, or "all": the command line's NAME.
    grid: str = field(metadata=NOT_AN_OPTION)
    data: str | None = option(
        None, "GTZAN-style folder <root>/<genre>/<file>, local or a bucket URI (s3://...), or a "
              "built-in set: builtin (synthetic genres, the default) or builtin:music (rendered "
              "scores of real music; needs the [music] extra)")
    smoke: bool = option(False, "shrink the grid to a few 1-2 epoch cells on a small data sample")
    results: str = option(DEFAULT_RESULTS, "tables and plots go to RESULTS/<grid>/")
    storage: str | None = option(  # None: paths.default_storage()
        None, lambda: f"Ray run folder: a local or NFS path, or an s3:// or gs:// URI; on a "
                      f"multi-node cluster, one every node sees (default {default_storage()})")
    cache: str | None = option(  # None: paths.default_cache()
        None, lambda: f"generated and prepared data: a folder, or a bucket URI shared by every "
                      f"machine (default {default_cache()})")
    seed: int | None = option(None, "seed for split, init, dropout, shuffle and drawn axes "
                                    "(default: the grid's, 0)")
    replicates: int | None = option(
        None, "train every configuration under N seeds (the sweep's seed and the N-1 after it) "
              "on the same split; tables aggregate them and the winner is the best mean "
              "(default: the grid's 'replicates:', 1)", minimum=1)
    # True, or "auto": continue a run if there is one, else start one.
    resume: bool | str = option(
        False, "continue an interrupted sweep; --resume auto: continue it if its run folder "
               "exists, else start it (a notebook cell that is re-run after a disconnect); "
               "either refuses a run whose config changed",
        cli={"nargs": "?", "const": True, "metavar": "auto"})
    fresh: bool = option(False, "delete an existing run of this grid in --storage and start over")
    preset: str = option("auto", "auto: 'cpu' on the built-in data without a GPU, else 'study' "
                                 "(the study's exact 201x552 spectrogram)",
                         cli={"choices": ["auto", *PRESETS]})
    grids: str | None = option(None, "a folder of your own grid files (NAME.yaml), looked up "
                                     "before the built-in ones")
    # The pipeline's, which `raygenre.run` does not run: a comma-separated string or a list.
    stages: tuple[str, ...] | None = option(
        None, "with NAME 'all': comma-separated stages to run, in order (default: the study's "
              "seven)", command_line_only=True)
    split: str | None = option(
        None, "fixed split lists (names relative to the data root): a folder of train/val/test "
              "lists, train=FILE,val=FILE,test=FILE, or a CSV with file and split columns; "
              "default: a random split by track from --seed")
    address: str | None = option(None, "Ray address to connect to (e.g. 'auto'); default: "
                                       "start one")
    workers_per_trial: int = option(1, "Ray Train workers per trial (DDP; a trial over several "
                                       "GPUs or machines); default 1: the loop runs in the Tune "
                                       "trial itself")
    cpus_per_trial: float | None = option(None, "CPUs per trial (default: sized from the "
                                                "largest suitable node)")
    gpus_per_trial: float | None = option(
        None, "GPUs per trial; a fraction (0.25) packs several trials on one GPU; 0 runs CPU "
              "trials on a GPU cluster (default: one trial per 4 of the CPUs that go with a "
              "GPU, at most 4 per GPU)")
    max_concurrent: int | None = option(None, "cap on trials running at once")
    # 1: a checkpoint per epoch, so a resume redoes at most the epoch under way; a larger k
    # writes about k times less to the bucket and a resume redoes up to k-1 epochs more. The
    # numbers do not depend on it (the epochs a sweep judges, tests or may stop at are kept).
    checkpoint_every: int = option(
        1, "checkpoint every K epochs (and at each trial's last, and wherever the sweep judges "
           "or may stop a trial): about K times less written to the bucket; a resume then "
           "redoes up to K-1 epochs", minimum=1, cli={"metavar": "K"})
    # Trackers that get one entry per cell: "mlflow", "wandb". A string may name several,
    # comma-separated, as the command line takes them.
    logger: tuple[str, ...] = option(
        (), "also log each cell (its config and per-epoch metrics) to MLflow (default store "
            "RESULTS/mlflow, or $MLFLOW_TRACKING_URI) or W&B; repeat or comma-separate for both "
            "(needs the [mlflow] extra, or wandb)",
        cli={"action": "append", "metavar": "mlflow|wandb", "default": None})
    # How the run was asked for, recorded in summary.md and best.json so a result says how to
    # make it again. Empty: the equivalent command line (`as_command`).
    command: str = field(default="", compare=False, metadata=NOT_AN_OPTION)

    def __post_init__(self) -> None:
        # Notebooks pass Path objects; the engine and the records want one spelling.
        for name in ("data", "results", "storage", "cache", "grids", "split"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
        if isinstance(self.grid, os.PathLike):
            object.__setattr__(self, "grid", os.fspath(self.grid))
        if isinstance(self.stages, str):
            object.__setattr__(self, "stages",
                               tuple(s.strip() for s in self.stages.split(",") if s.strip()))
        elif self.stages is not None:
            object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "logger", _names(self.logger))

    def check(self) -> None:
        """The checks that need nothing but the options; ConfigError names the option."""
        if not self.grid:
            raise ConfigError("no grid named: give a grid name, a grid .yaml file or 'all' "
                              "(python -m raygenre.grid --list shows the grids)")
        if not (isinstance(self.resume, bool) or self.resume == "auto"):
            raise ConfigError(f"--resume: nothing (continue the run, which must exist) or "
                              f"'auto' (continue it if it exists, else start one); got "
                              f"{self.resume!r}")
        if self.resume and self.fresh:
            raise ConfigError("--resume and --fresh contradict each other: pick one")
        if self.stages is not None and self.grid != "all":
            raise ConfigError("--stages goes with the pipeline: python -m raygenre.grid all "
                              "--stages cnn,activations")
        if self.preset not in ("auto", *PRESETS):
            raise ConfigError(f"--preset {self.preset!r}: choose one of "
                              f"{', '.join(['auto', *PRESETS])}")
        # argparse types the command line; a notebook's values are checked here instead, so a
        # string seed fails now rather than inside the first trial.
        for f in option_fields():
            _check_number(f, getattr(self, f.name))
        for name in self.logger:
            check_logger(name)

    @property
    def recorded_command(self) -> str:
        return self.command or self.as_command()

    def as_command(self) -> str:
        """The command line that asks for the same run (what a result records)."""
        words = ["python", "-m", "raygenre.grid", self.grid]
        defaults = RunOptions(grid=self.grid)
        for f in option_fields():
            value = getattr(self, f.name)
            if value == getattr(defaults, f.name):
                continue
            flag = f"--{_flag(f.name)}"
            if isinstance(value, bool):
                words.append(flag)
            elif isinstance(value, tuple):
                words += [flag, ",".join(value)]
            else:
                words += [flag, str(value)]
        return " ".join(shlex.quote(w) for w in words)

    @property
    def results_root(self) -> Path:
        return Path(self.results).resolve()


def option_fields() -> list[Field]:
    """RunOptions' options, in their order (every field but `grid` and `command`)."""
    return [f for f in fields(RunOptions) if f.metadata.get("option", True)]


def _hint(f: Field) -> Any:
    """An option's type without None: int, float, bool, or another type (a string's)."""
    hint = typing.get_type_hints(RunOptions)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is types.UnionType and len(args) == 1 else hint


def _check_number(f: Field, value: Any) -> None:
    """ConfigError naming the option for a number option's value of another type, or below
    its minimum."""
    kind = _hint(f)
    if value is None or kind not in (int, float):
        return
    if isinstance(value, bool) or not isinstance(value, int if kind is int else Real):
        raise ConfigError(f"--{_flag(f.name)}: {'an integer' if kind is int else 'a number'}, "
                          f"got {value!r}")
    least = f.metadata.get("minimum")
    if least is not None and value < least:
        raise ConfigError(f"--{_flag(f.name)}: an integer of at least {least}, got {value!r}")


def cli_arguments() -> list[tuple[str, dict[str, Any]]]:
    """(--flag, argparse keywords) of every option, for `argparse.add_argument`."""
    out = []
    for f in option_fields():
        kwargs: dict[str, Any] = {"help": _help(f), "default": f.default}
        kind = _hint(f)
        if kind is bool:
            kwargs["action"] = "store_true"
        elif kind in (int, float):
            kwargs["type"] = kind
        kwargs.update(f.metadata.get("cli", {}))
        if "nargs" in kwargs or kwargs.get("action", "store_true") != "store_true":
            kwargs.pop("type", None)
        out.append((f"--{_flag(f.name)}", kwargs))
    return out


def _help(f: Field) -> str:
    """An option's help (a plain field, declared without `option`, has none: the test of the
    options asks for it)."""
    text = f.metadata.get("help", "")
    return text() if callable(text) else text


def api_signature(returns: Any) -> inspect.Signature:
    """`raygenre.run`'s signature: the grid, then every option it takes as a keyword."""
    hints = typing.get_type_hints(RunOptions)
    params = [inspect.Parameter("grid", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                annotation=str | os.PathLike[str])]
    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                 annotation=hints[f.name])
               for f in option_fields() if f.metadata.get("api", True)]
    return inspect.Signature(params, return_annotation=returns)


def api_help() -> str:
    """Each keyword of `raygenre.run` and what it does, for its docstring."""
    lines = []
    for f in option_fields():
        if f.metadata.get("api", True):
            lines.append(textwrap.fill(f"{f.name}: {_help(f)}", width=96, initial_indent="    ",
                                       subsequent_indent="        "))
    return "\n".join(lines)


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _names(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """--logger's names, in order, once each: "mlflow,wandb", ["mlflow"], None."""
    if value is None:
        return ()
    words = list(value) if isinstance(value, Iterable) and not isinstance(value, str) else [value]
    out: list[str] = []
    for w in words:
        for name in str(w).split(","):
            name = name.strip().lower()
            if name and name not in out:
                out.append(name)
    return tuple(out)


def check_logger(name: str) -> None:
    """ConfigError, naming --logger and the package to install, for a logger raygenre does
    not have or whose package is missing: now, not when the first trial reports."""
    if name not in LOGGERS:
        raise ConfigError(f"--logger {name!r}: choose from {', '.join(LOGGERS)} (comma-"
                          f"separated for several; TensorBoard files are always written)")
    module, pip, least = LOGGER_NEEDS[name]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"--logger {name} needs the {module} package, which is not "
                          f"installed: {pip}")
    if least is not None:
        installed = importlib.metadata.version(module)
        have = tuple(int(x) for x in re.findall(r"\d+", installed)[:len(least)])
        if have < least:
            raise ConfigError(f"--logger {name} needs {module} >= "
                              f"{'.'.join(map(str, least))}, not {installed}: {pip}")
