"""What one run of raygenre is asked to do: the options the command line and the Python API
both build, and the only thing the engine (raygenre.sweep) reads.

Light on purpose (no torch, no Ray): `import raygenre` in a notebook stays quick, and the
checks here run before anything heavy is imported.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from numbers import Real
from pathlib import Path

from raygenre.config import PRESETS, ConfigError

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


@dataclass(frozen=True)
class RunOptions:
    """One sweep (or, with grid "all", the study's pipeline), as `python -m raygenre.grid`
    takes it: each field is the option of the same name (`workers_per_trial` is
    `--workers-per-trial`); `docs/cli.md` says what each does."""

    grid: str  # a grid name, a path to a grid .yaml file, or "all"
    data: str | None = None  # None: the built-in synthetic set
    smoke: bool = False
    results: str = DEFAULT_RESULTS
    storage: str | None = None  # None: paths.default_storage()
    cache: str | None = None  # None: paths.default_cache()
    seed: int | None = None
    replicates: int | None = None
    resume: bool | str = False  # True, or "auto": continue a run if there is one, else start one
    fresh: bool = False
    preset: str = "auto"
    grids: str | None = None
    stages: tuple[str, ...] | None = None
    split: str | None = None
    address: str | None = None
    workers_per_trial: int = 1
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    # A checkpoint every k epochs (and at each trial's last epoch and every epoch the sweep
    # judges, tests or may stop a trial at). 1: a checkpoint per epoch, so a resume redoes at
    # most the epoch under way; a larger k writes about k times less to the bucket and a resume
    # redoes up to k-1 epochs more. The numbers do not depend on it.
    checkpoint_every: int = 1
    # Trackers that get one entry per cell (docs/cli.md, --logger): "mlflow", "wandb".
    # A string may name several, comma-separated, as the command line takes them.
    logger: tuple[str, ...] = ()
    # How the run was asked for, recorded in summary.md and best.json so a result says how to
    # make it again. Empty: the equivalent command line (`as_command`).
    command: str = field(default="", compare=False)

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
        for name in ("seed", "replicates", "workers_per_trial", "max_concurrent",
                     "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"--{_flag(name)}: an integer, got {value!r}")
        for name in ("cpus_per_trial", "gpus_per_trial"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, Real)):
                raise ConfigError(f"--{_flag(name)}: a number, got {value!r}")
        if isinstance(self.checkpoint_every, int) and self.checkpoint_every < 1:
            raise ConfigError(f"--checkpoint-every: 1 or more epochs, got "
                              f"{self.checkpoint_every}")
        for name in self.logger:
            check_logger(name)

    @property
    def recorded_command(self) -> str:
        return self.command or self.as_command()

    def as_command(self) -> str:
        """The command line that asks for the same run (what a result records)."""
        words = ["python", "-m", "raygenre.grid", self.grid]
        defaults = RunOptions(grid=self.grid)
        for f in fields(self):
            if f.name in ("grid", "command"):
                continue
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
