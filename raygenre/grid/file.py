"""Grid files: deltas over the one default config, loaded and expanded into cells (the
grid's points).

A grid file names a description, one objective, base deltas and the axes to cross (plus named
`variants:` and seeded `draw:`s). Each key and its type is checked at load; the values under
the preset the sweep runs with are judged once, before any work, by grid.resolved.resolve,
which also groups the cells into Tune trials: cells that differ only in `epochs`, where nothing
in the config reads the epoch count, are trained by one trial (a 3-epoch cell *is* the first
three epochs of the 10-epoch one: the loop is seeded and deterministic).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
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
    Config,
    ConfigError,
    check_deltas,
)
from raygenre.grid.objective import JUDGE_EPOCH, JUDGE_EPOCHS, Objective


@dataclass(frozen=True)
class Cell:
    """One point of a grid: its deltas over the sweep's base, and its variant's name."""

    deltas: dict[str, Any]
    variant: str | None = None

    def as_row(self) -> dict[str, Any]:
        """Its swept values as a table row ('variant' first, when there is one)."""
        return {**({"variant": self.variant} if self.variant else {}), **self.deltas}


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
    # The config keys a pipeline stage passes on to the stages after it (the file's `carry:`).
    next_stage_keys: tuple[str, ...] = ()
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
        source = Path(__file__).resolve().parents[2] / "grids"  # <checkout>/raygenre/grid/
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
    """Load a grid file and check its shape and each value's key and type (the values' ranges
    and the rules between keys are judged once the preset is known: grid.resolved.resolve).
    `seed` (the command's --seed) is what `draw:` axes are drawn from and where replicate
    seeds start; without it, the file's base seed (default 0). `grids`: the user's grid
    folder. `replicates` (--replicates, checked with the other options: RunOptions.check)
    overrides the file's."""
    path = grid_path(name_or_path, grids)
    raw = _read(path)
    metric = raw.get("metric", "val/acc")
    if metric not in METRICS:
        raise ConfigError(f"{path}: metric {metric!r} is not one of {', '.join(METRICS)}")
    mode = raw.get("mode", METRIC_MODES[metric])
    if mode not in ("max", "min"):
        raise ConfigError(f"{path}: mode must be 'max' or 'min', got {mode!r}")
    base = check_deltas(raw.get("base") or {}, f"{path}: base")
    axes = _load_axes(raw.get("grid") or {}, path)
    variants = _load_variants(raw.get("variants") or [], path)
    draw_seed = int(base.get("seed", Config.seed)) if seed is None else seed
    for key, spec in (raw.get("draw") or {}).items():
        if key in axes:
            raise ConfigError(f"{path}: {key!r} is both a grid axis and drawn")
        axes[key] = draw(key, spec, draw_seed, f"{path}: draw")
    next_stage_keys = raw.get("carry") or []
    if not isinstance(next_stage_keys, list):
        raise ConfigError(f"{path}: 'carry' must be a list of config keys")
    for k in next_stage_keys:
        if k not in FIELDS:
            raise ConfigError(f"{path}: carry key {k!r} is not a config key")
    use_asha, asha = _load_asha(raw.get("asha", {}), path)
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
    n_rep = _replicates(raw, replicates, axes, draw_seed, path)
    return Grid(name=path.stem, path=path, description=str(raw.get("description", "")),
                metric=metric, mode=mode, base=base, axes=axes, variants=variants,
                next_stage_keys=tuple(next_stage_keys), asha=use_asha, share_prefixes=share,
                draw_seed=draw_seed, replicates=n_rep, test=test, judge_epoch=judge_at, **asha)


def _read(path: Path) -> dict[str, Any]:
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
    return raw


def _load_axes(raw: Any, path: Path) -> dict[str, list[Any]]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: 'grid' must map config keys to lists of values")
    axes: dict[str, list[Any]] = {}
    for key, values in raw.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid key {key!r} must be a non-empty list of values, "
                              f"got {values!r}")
        if key in DATA_KEYS:
            raise ConfigError(f"{path}: grid key {key!r} cannot be swept: the data is prepared "
                              f"once per sweep; set it under 'base:' instead")
        axes[key] = [check_deltas({key: v}, f"{path}: grid")[key] for v in values]
    return axes


def _load_asha(asha: Any, path: Path) -> tuple[bool, dict[str, int]]:
    """(whether ASHA cuts trials, its grace_period and reduction_factor if the file sets them)."""
    use_asha = asha is not False
    asha = {} if asha in (False, True, None) else asha
    if not isinstance(asha, dict) or set(asha) - {"grace_period", "reduction_factor"}:
        raise ConfigError(f"{path}: 'asha' is false (run every trial in full) or a mapping of "
                          f"grace_period and reduction_factor")
    for k, v in asha.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{path}: asha.{k} must be a positive integer, got {v!r}")
    return use_asha, asha


def _replicates(raw: dict[str, Any], option: int | None, axes: dict[str, list[Any]],
                draw_seed: int, path: Path) -> int:
    """The replicate count, the one place it is derived: --replicates, else the file's
    `replicates:` (checked here), else the length of a `seed` axis written out (a `seed: [0]`
    axis is one replicate). More than one adds the `seed` axis, from the sweep's seed up."""
    if option is None:
        n_rep = raw.get("replicates", 1)
        if not isinstance(n_rep, int) or isinstance(n_rep, bool) or n_rep < 1:
            raise ConfigError(f"{path}: replicates must be a positive integer, got {n_rep!r}")
    else:
        n_rep = option
    if n_rep > 1:
        if "seed" in axes:
            where = "--replicates" if option is not None else f"{path}: replicates"
            raise ConfigError(f"{where}: the grid already sweeps 'seed' ({axes['seed']}); those "
                              f"seeds are its replicates: drop one of the two")
        axes["seed"] = [draw_seed + r for r in range(n_rep)]
    elif "seed" in axes:
        n_rep = len(axes["seed"])
    return n_rep


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
