"""Grid files: deltas over the one default config, loaded, validated and expanded into cells
(the grid's points) and the Tune trials that train them.

A grid file names a description, one objective, base deltas and the axes to cross (plus named
`variants:` and seeded `draw:`s). Every cell is validated at load, before any work. Cells that
differ only in `epochs`, where nothing in the config reads the epoch count, are trained by one
Tune trial: a 3-epoch cell *is* the first three epochs of the 10-epoch one (the loop is seeded
and deterministic), so the sweep trains it once and reads each member at its own epoch.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raygenre.config import (
    DATA_KEYS,
    FIELDS,
    METRIC_MODES,
    METRICS,
    PRESETS,
    Config,
    ConfigError,
    check_config,
    check_deltas,
)
from raygenre.data import features
from raygenre.training import models, optim


@dataclass(frozen=True)
class Cell:
    """One point of a grid: its deltas over the sweep's base, and its variant's name."""

    deltas: dict[str, Any]
    variant: str | None = None

    def as_row(self) -> dict[str, Any]:
        """Its swept values as a table row ('variant' first, when there is one)."""
        return {**({"variant": self.variant} if self.variant else {}), **self.deltas}


@dataclass(frozen=True)
class TrialPlan:
    """What Tune runs as one trial: one cell, or several that differ only in `epochs` (each
    shorter one is an epoch-prefix of the longest), sorted by epoch count."""

    cells: tuple[Cell, ...]
    base_epochs: int

    @property
    def longest(self) -> Cell:
        return self.cells[-1]

    @property
    def members(self) -> list[int]:
        """The epoch count of each cell this trial stands for."""
        return [c.deltas.get("epochs", self.base_epochs) for c in self.cells]

    def tune_value(self) -> dict[str, Any]:
        """This trial in Tune's param space (plain JSON values; see `unpack`)."""
        return json.loads(json.dumps({**self.longest.as_row(), "members": self.members}))


# The key of Tune's param space under which a trial's cells are packed (their shared deltas and
# member epochs): Tune sees one value per trial, so its tables show trials, not cells.
CELLS_KEY = "cells"
LEGACY_CELLS_KEY = "run"  # its name in sweeps started before 2026-12-06, which a resume reads


def packed_cells(config: dict[str, Any]) -> Any:
    """The packed cells of a Tune trial's config (None for a config without them)."""
    return config.get(CELLS_KEY, config.get(LEGACY_CELLS_KEY))


def unpack(config: dict[str, Any]) -> tuple[dict[str, Any], str | None, list[int]]:
    """(config values, variant, member epochs) of a Tune trial's config: the base keys with the
    trial's deltas merged in."""
    cells = dict(packed_cells(config) or {})
    variant, members = cells.pop("variant", None), cells.pop("members", None)
    flat = {**{k: v for k, v in config.items() if k not in (CELLS_KEY, LEGACY_CELLS_KEY)},
            **cells}
    return flat, variant, list(members or [flat["epochs"]])


# Which epoch of a cell is judged, tested and compared. A cell's `epochs` means "train N
# epochs", and what that gives is the model after its last epoch: judged there, a 3-epoch cell
# can beat its 10-epoch cell when the data say so, which is the question an epochs axis asks
# (the study's exercise 6 read validation at the end of each run). 'best' (early stopping: the
# best validation epoch among the first N) is a choice a grid makes explicitly; it makes the
# epochs axis non-decreasing by construction and is one more choice made on the validation
# tracks, so the report re-picks the epoch inside every bootstrap draw (report/verdict.py).
JUDGE_EPOCH = "last"
JUDGE_EPOCHS = {"last": "last epoch", "best": "best validation epoch (early stopping)"}


@dataclass(frozen=True)
class Objective:
    """A grid's one objective: what cells are judged on and checkpoints kept by, and at which
    of a cell's epochs (`JUDGE_EPOCH`)."""

    metric: str
    mode: str
    epoch: str = JUDGE_EPOCH

    @property
    def best_column(self) -> str:
        """Its best value over a cell's epochs, as a table column."""
        return f"best/{self.metric}"

    @property
    def column(self) -> str:
        """The judged value's column: `last/<metric>` or `best/<metric>`."""
        return f"{self.epoch}/{self.metric}"

    @property
    def words(self) -> str:
        """The judging rule as the tables name it."""
        return JUDGE_EPOCHS[self.epoch]

    def judged(self, history: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The epoch of `history` (a cell's epochs) it is judged and tested at: the last, or
        the best (`best_epoch`); None when that epoch has no finite value (a last epoch that
        diverged is what training N epochs gave: no earlier epoch stands in for it)."""
        if self.epoch == "best":
            return best_epoch(history, self.metric, self.mode)
        last = history[-1] if history else {}
        value = last.get(self.metric)
        return last if value is not None and not math.isnan(value) else None


@dataclass(frozen=True)
class Grid:
    """A sweep: a description, one objective, the base deltas and the axes to cross."""

    name: str
    path: Path
    description: str
    metric: str = "val/acc"
    mode: str = "max"
    base: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    # Named delta sets crossed with the axes, for sweeps that are not a product (e.g. each
    # optimizer with its own learning rate). Each is {"name": ..., <config keys>...}.
    variants: tuple[dict[str, Any], ...] = ()
    carry: tuple[str, ...] = ()
    # ASHA: epochs before the first cut, and how many trials survive each rung (1 in rf).
    # asha=False runs every trial in full (seed studies, comparisons).
    asha: bool = True
    grace_period: int = 1
    reduction_factor: int = 3
    # Cells that are epoch-prefixes of another share its trial (see the module docstring).
    share_prefixes: bool = True
    draw_seed: int = 0  # the seed `draw:` axes were drawn from
    # Seed replicates: every configuration trains under this many seeds (the `seed` axis, from
    # the sweep's seed up) on the one split the sweep's seed drew; tables aggregate them, and
    # the winner is the best mean. A `seed` axis written out in the file counts the same way.
    replicates: int = 1
    # Which cells read the test split: 'chosen' (the winning configuration's, once each, the
    # default: a test figure of a cell not chosen on validation informs no choice), or 'every'
    # (a comparison fixed before the sweep, such as `best`'s three recipes).
    test: str = "chosen"
    judge_epoch: str = JUDGE_EPOCH  # 'last' or 'best': see JUDGE_EPOCH

    @property
    def objective(self) -> Objective:
        return Objective(self.metric, self.mode, self.judge_epoch)

    @property
    def n_cells(self) -> int:
        n = max(1, len(self.variants))
        for values in self.axes.values():
            n *= len(values)
        return n

    @property
    def swept(self) -> list[str]:
        """Keys that differ between cells: the columns of every table."""
        keys = (["variant"] if self.variants else []) + list(self.axes)
        for v in self.variants:
            keys += [k for k in v if k != "name" and k not in keys]
        return keys

    @property
    def labels(self) -> list[str]:
        """The short form of `swept` for tables and plots: a variant by its name."""
        return (["variant"] if self.variants else []) + list(self.axes)

    def cells(self) -> list[Cell]:
        """Every cell (variants, then the axes' product), in a fixed order."""
        combos: list[dict[str, Any]] = [{}]
        for key, values in self.axes.items():
            combos = [{**c, key: v} for c in combos for v in values]
        variants = [dict(v) for v in self.variants] or [{}]
        return [Cell({**{k: x for k, x in v.items() if k != "name"}, **c}, v.get("name"))
                for v in variants for c in combos]

    def cell_rows(self) -> list[dict[str, Any]]:
        """Every cell as a flat row: its variant's name and its deltas."""
        return [c.as_row() for c in self.cells()]

    def trial_plans(self, base: Config) -> list[TrialPlan]:
        """The cells grouped into what Tune runs: cells that differ only in `epochs` share
        one trial when nothing in their config reads the epoch count."""
        groups: dict[str, list[Cell]] = {}
        for i, c in enumerate(self.cells()):
            shared = self.share_prefixes and not reads_epochs(base.replace(**c.deltas))
            rest = {k: v for k, v in c.as_row().items() if k != "epochs"}
            key = json.dumps(rest, sort_keys=True) if shared else f"#{i}"
            groups.setdefault(key, []).append(c)
        return [TrialPlan(tuple(sorted(g, key=lambda c: c.deltas.get("epochs", base.epochs))),
                          base.epochs) for g in groups.values()]

    def max_epochs(self, base: Config) -> int:
        return max(c.deltas.get("epochs", base.epochs) for c in self.cells())

    def cap_batch_size(self, n: int) -> Grid:
        """The same sweep with every batch size at most `n` (a smoke sample's training split);
        values that become equal are kept once."""
        axes = dict(self.axes)
        if "batch_size" in axes:
            axes["batch_size"] = sorted({min(b, n) for b in axes["batch_size"]})
        base = {**self.base, **({"batch_size": min(self.base["batch_size"], n)}
                                if "batch_size" in self.base else {})}
        variants = tuple({**v, "batch_size": min(v["batch_size"], n)} if "batch_size" in v
                         else v for v in self.variants)
        return dataclasses.replace(self, base=base, axes=axes, variants=variants)

    def smoke(self) -> Grid:
        """The same sweep, shrunk to a few one- and two-epoch cells for tests; seed replicates
        are kept, all of them (what a smoke run of replicates is there to check)."""
        axes = {k: list(v if k == "seed" and self.replicates > 1 else v[:2])
                for k, v in self.axes.items()}
        base = dict(self.base)
        if "epochs" in axes:
            axes["epochs"] = list(range(1, len(axes["epochs"]) + 1))
        base["epochs"] = min(base.get("epochs", Config.epochs), 2)
        variants = tuple({**v, "epochs": min(v["epochs"], 2)} if "epochs" in v else v
                         for v in self.variants[:2])
        return dataclasses.replace(self, base=base, axes=axes, variants=variants, grace_period=1)


def best_epoch(history: list[dict[str, Any]], metric: str, mode: str,
               upto: int | None = None) -> dict[str, Any] | None:
    """The epoch a cell is judged and tested at: its best by the grid's metric among epochs
    up to `upto`, the latest on a tie (as Tune's checkpoint retention keeps them)."""
    sign = 1 if mode == "max" else -1
    seen = [h for h in history if (upto is None or h["epoch"] <= upto)
            and h.get(metric) is not None and not math.isnan(h[metric])]
    return max(seen, key=lambda h: (sign * h[metric], h["epoch"]), default=None)


def reads_epochs(cfg: Config) -> bool:
    """Whether anything in the cell's arithmetic depends on its epoch count (a schedule whose
    period is `epochs`): such a cell is not an epoch-prefix of a longer one."""
    return cfg.scheduler in optim.READS_EPOCHS


def describe_trials(plans: list[TrialPlan], n_cells: int) -> str:
    """One line for the plan: how many trials stand for how many cells, and why."""
    shared = [p for p in plans if len(p.cells) > 1]
    if not shared:
        return f"{n_cells} cells, one trial each"
    return (f"{len(plans)} trials stand for {n_cells} cells: {len(shared)} trial(s) each stand "
            f"for cells that differ only in epochs (a shorter cell is the first epochs of the "
            f"longest: the loop is seeded and its schedule does not read the epoch count)")


_GRID_KEYS = {"description", "metric", "mode", "base", "grid", "variants", "draw", "carry",
              "asha", "share_prefixes", "replicates", "test", "judge_epoch"}
TEST_READS = ("chosen", "every")


def builtin_grids() -> Path:
    """The grid files shipped with raygenre: the source tree's top-level `grids/`, installed as
    the package data `raygenre.grids` (so a wheel has them, wherever the command runs). A
    checkout used without installing (PYTHONPATH=.) has no `raygenre.grids`: its `grids/` is
    read directly (seen on a lent GPU machine, where nothing could be installed)."""
    try:
        return Path(str(importlib.resources.files("raygenre.grids")))
    except ModuleNotFoundError:
        source = Path(__file__).resolve().parent.parent / "grids"
        if source.is_dir():
            return source
        raise ConfigError("raygenre's grid files are missing: install the package "
                          "(pip install -e . in a checkout, or the wheel)") from None


def _dirs(grids: str | os.PathLike | None) -> list[Path]:
    """Where grid names are looked up: the user's --grids folder first, then the built-ins."""
    if grids is None:
        return [builtin_grids()]
    user = Path(grids).expanduser()
    if not user.is_dir():
        raise ConfigError(f"--grids {grids}: not a folder of grid files (NAME.yaml)")
    return [user.resolve(), builtin_grids()]


def grid_path(name_or_path: str, grids: str | os.PathLike | None = None) -> Path:
    """A grid by name (NAME.yaml in --grids, else among the built-ins) or by path to a file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"grid file {p} does not exist")
        return p.resolve()
    for folder in _dirs(grids):
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError(f"unknown grid {name_or_path!r}. Grids: {', '.join(list_grids(grids))} "
                      f"(or give a path to a .yaml file, or a folder of them with --grids)")


def list_grids(grids: str | os.PathLike | None = None) -> list[str]:
    """Grid names: the user's --grids folder's and the built-ins (a user's file of the same
    name as a built-in one replaces it)."""
    return sorted({p.stem for folder in _dirs(grids) for p in folder.glob("*.yaml")})


def load_grid(name_or_path: str, seed: int | None = None,
              grids: str | os.PathLike | None = None, replicates: int | None = None) -> Grid:
    """Load and check a grid file. `seed` (the command's --seed) is what `draw:` axes are drawn
    from and where replicate seeds start; without it, the file's base seed (default 0).
    `grids`: the user's grid folder. `replicates` (--replicates) overrides the file's."""
    path = grid_path(name_or_path, grids)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a grid file must be a mapping with keys "
                          f"{', '.join(sorted(_GRID_KEYS))}")
    unknown = set(raw) - _GRID_KEYS
    if unknown:
        names = ", ".join(map(repr, sorted(unknown)))
        raise ConfigError(f"{path}: unknown top-level key(s) {names}"
                          f"; allowed: {', '.join(sorted(_GRID_KEYS))} (config keys go under "
                          f"'base:' or 'grid:')")
    metric = raw.get("metric", "val/acc")
    if metric not in METRICS:
        raise ConfigError(f"{path}: metric {metric!r} is not one of {', '.join(METRICS)}")
    mode = raw.get("mode", METRIC_MODES[metric])
    if mode not in ("max", "min"):
        raise ConfigError(f"{path}: mode must be 'max' or 'min', got {mode!r}")
    base = check_deltas(raw.get("base") or {}, f"{path}: base")
    axes_raw = raw.get("grid") or {}
    if not isinstance(axes_raw, dict):
        raise ConfigError(f"{path}: 'grid' must map config keys to lists of values")
    axes: dict[str, list[Any]] = {}
    for key, values in axes_raw.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid key {key!r} must be a non-empty list of values, "
                              f"got {values!r}")
        if key in DATA_KEYS:
            raise ConfigError(f"{path}: grid key {key!r} cannot be swept: the data is prepared "
                              f"once per sweep; set it under 'base:' instead")
        axes[key] = [check_deltas({key: v}, f"{path}: grid")[key] for v in values]
    variants = _load_variants(raw.get("variants") or [], path)
    draw_seed = int(base.get("seed", Config.seed)) if seed is None else seed
    for key, spec in (raw.get("draw") or {}).items():
        if key in axes:
            raise ConfigError(f"{path}: {key!r} is both a grid axis and drawn")
        axes[key] = draw(key, spec, draw_seed, f"{path}: draw")
    carry = raw.get("carry") or []
    if not isinstance(carry, list):
        raise ConfigError(f"{path}: 'carry' must be a list of config keys")
    for k in carry:
        if k not in FIELDS:
            raise ConfigError(f"{path}: carry key {k!r} is not a config key")
    asha = raw.get("asha", {})
    use_asha = asha is not False
    asha = {} if asha in (False, True, None) else asha
    if not isinstance(asha, dict) or set(asha) - {"grace_period", "reduction_factor"}:
        raise ConfigError(f"{path}: 'asha' is false (run every trial in full) or a mapping of "
                          f"grace_period and reduction_factor")
    for k, v in asha.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{path}: asha.{k} must be a positive integer, got {v!r}")
    share = raw.get("share_prefixes", True)
    if not isinstance(share, bool):
        raise ConfigError(f"{path}: 'share_prefixes' must be true or false, got {share!r}")
    test = raw.get("test", "chosen")
    if test not in TEST_READS:
        raise ConfigError(f"{path}: 'test' must be one of {', '.join(TEST_READS)}, got {test!r}")
    judge_at = raw.get("judge_epoch", JUDGE_EPOCH)
    if judge_at not in JUDGE_EPOCHS:
        raise ConfigError(f"{path}: 'judge_epoch' must be one of {', '.join(JUDGE_EPOCHS)} "
                          f"(the last epoch, or early stopping at the best validation epoch), "
                          f"got {judge_at!r}")
    n_rep = raw.get("replicates", 1) if replicates is None else replicates
    where = "--replicates" if replicates is not None else f"{path}: replicates"
    if not isinstance(n_rep, int) or isinstance(n_rep, bool) or n_rep < 1:
        raise ConfigError(f"{where} must be a positive integer, got {n_rep!r}")
    if n_rep > 1:
        if "seed" in axes:
            raise ConfigError(f"{where}: the grid already sweeps 'seed' ({axes['seed']}); those "
                              f"seeds are its replicates: drop one of the two")
        axes["seed"] = [draw_seed + r for r in range(n_rep)]
    elif "seed" in axes:
        n_rep = len(axes["seed"])
    grid = Grid(name=path.stem, path=path, description=str(raw.get("description", "")),
                metric=metric, mode=mode, base=base, axes=axes, variants=variants,
                carry=tuple(carry), asha=use_asha, share_prefixes=share, draw_seed=draw_seed,
                replicates=n_rep, test=test, judge_epoch=judge_at, **asha)
    # Every value is judged here, at load, before any data or Ray: the base with --seed over it,
    # as resolve_base layers them, then each cell (resolve_base judges them again once the
    # preset and keys carried from an earlier stage are in).
    loaded = Config.from_dict({**base, **({"seed": seed} if seed is not None else {})})
    validate(loaded, f"{path}: base" + (f" with --seed {seed}" if seed is not None else ""))
    for c in grid.cells():
        validate(loaded.replace(**c.deltas), f"{path}: cell {c.as_row()}")
    return grid


def _load_variants(raw: Any, path: Path) -> tuple[dict[str, Any], ...]:
    if not isinstance(raw, list) or not all(isinstance(v, dict) for v in raw):
        raise ConfigError(f"{path}: 'variants' must be a list of mappings of config keys")
    out, names = [], set()
    for i, v in enumerate(raw):
        name = str(v.get("name", f"v{i}"))
        if name in names:
            raise ConfigError(f"{path}: variant name {name!r} is used twice")
        names.add(name)
        deltas = check_deltas({k: x for k, x in v.items() if k != "name"},
                              f"{path}: variant {name!r}")
        if any(k in DATA_KEYS for k in deltas):
            raise ConfigError(f"{path}: variant {name!r} sets a data key; data is prepared "
                              f"once per sweep")
        out.append({"name": name, **deltas})
    return tuple(out)


_DRAWS = {"hidden": {"n", "layers", "units"}}


def draw(key: str, spec: Any, seed: int, where: str) -> list[Any]:
    """Values drawn at random from the seed (the study's random MLPs): the same seed, the same
    list. `hidden: {n: 10, layers: [2, 15], units: [10, 128]}`."""
    if key not in _DRAWS:
        raise ConfigError(f"{where}: cannot draw {key!r}; drawable: {', '.join(_DRAWS)}")
    if not isinstance(spec, dict) or set(spec) != _DRAWS[key]:
        raise ConfigError(f"{where}: {key} needs exactly {sorted(_DRAWS[key])}, got {spec!r}")
    (lo_l, hi_l), (lo_u, hi_u) = spec["layers"], spec["units"]
    rng = random.Random(f"{seed}:draw:{key}")
    return [tuple(rng.randint(lo_u, hi_u) for _ in range(rng.randint(lo_l, hi_l)))
            for _ in range(int(spec["n"]))]


# The names each registry key may take, for config.check_config (which cannot import them).
REGISTRIES = {"model": models.MODELS, "activation": models.ACTIVATIONS,
              "features": features.FEATURES, "optimizer": optim.OPTIMIZERS,
              "scheduler": optim.SCHEDULERS}


def validate(cfg: Config, where: str) -> None:
    """Every range, name and between-keys rule of a finished config (config.check_config)."""
    check_config(cfg, where, REGISTRIES)


def resolve_base(grid: Grid, preset: str, seed: int | None,
                 carried: dict[str, Any] | None = None) -> Config:
    """Defaults < preset < grid base < keys carried from a previous stage < --seed."""
    base = Config().replace(**PRESETS[preset]).replace(**grid.base).replace(**(carried or {}))
    if seed is not None:
        base = base.replace(seed=seed)
    validate(base, f"{grid.path}: base")
    for c in grid.cells():
        validate(base.replace(**c.deltas), f"{grid.path}: cell {c.as_row()}")
    return base
