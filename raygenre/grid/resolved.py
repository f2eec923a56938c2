"""A sweep resolved once: a grid's cells as finished, checked configs under one preset, and the
Tune trials that train them.

`resolve` is the one place where a cell's deltas are laid over the base (defaults < preset <
grid base < keys carried from an earlier stage < --seed) and the one place where the finished
configs are judged (config.check_config). The tuner, the estimate, the checks before the first
trial, the report and the trials read the `ResolvedSweep` it returns; nothing after it applies
deltas or judges a value again. A smoke run's batch-size cap is its one other step (`capped`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from raygenre.config import PRESETS, Config, ConfigError, check_config
from raygenre.data import features
from raygenre.grid.file import Cell, Grid
from raygenre.training import models, optim

# The names each registry key may take, for config.check_config (which cannot import them).
REGISTRIES = {"model": models.MODELS, "activation": models.ACTIVATIONS,
              "features": features.FEATURES, "optimizer": optim.OPTIMIZERS,
              "scheduler": optim.SCHEDULERS}


def validate(cfg: Config, where: str) -> None:
    """Every range, name and between-keys rule of a finished config (config.check_config)."""
    check_config(cfg, where, REGISTRIES)


@dataclass(frozen=True)
class TrialPlan:
    """What Tune runs as one trial: one cell, or several that differ only in `epochs` (each
    shorter one is an epoch-prefix of the longest), sorted by epoch count, each with its
    resolved config."""

    cells: tuple[Cell, ...]
    configs: tuple[Config, ...]

    @property
    def longest(self) -> Cell:
        return self.cells[-1]

    @property
    def config(self) -> Config:
        """The longest cell's config: what the trial trains."""
        return self.configs[-1]

    @property
    def members(self) -> list[int]:
        """The epoch count of each cell this trial stands for."""
        return [c.epochs for c in self.configs]

    def tune_value(self) -> dict[str, Any]:
        """This trial in Tune's param space (plain JSON values; see `grid.file.unpack`)."""
        return json.loads(json.dumps({**self.longest.as_row(), "members": self.members}))


def reads_epochs(cfg: Config) -> bool:
    """Whether anything in the cell's arithmetic depends on its epoch count (a schedule whose
    period is `epochs`): such a cell is not an epoch-prefix of a longer one."""
    return cfg.scheduler in optim.READS_EPOCHS


def plan_trials(cells: tuple[tuple[Cell, Config], ...], share_prefixes: bool
                ) -> tuple[TrialPlan, ...]:
    """The cells grouped into what Tune runs: cells that differ only in `epochs` share one
    trial when nothing in their config reads the epoch count."""
    groups: dict[str, list[tuple[Cell, Config]]] = {}
    for i, (cell, cfg) in enumerate(cells):
        shared = share_prefixes and not reads_epochs(cfg)
        rest = {k: v for k, v in cell.as_row().items() if k != "epochs"}
        key = json.dumps(rest, sort_keys=True) if shared else f"#{i}"
        groups.setdefault(key, []).append((cell, cfg))
    plans = []
    for group in groups.values():
        group.sort(key=lambda cc: cc[1].epochs)
        plans.append(TrialPlan(tuple(c for c, _ in group), tuple(cfg for _, cfg in group)))
    return tuple(plans)


def describe_trials(plans: tuple[TrialPlan, ...], n_cells: int) -> str:
    """One line for the plan: how many trials stand for how many cells, and why."""
    shared = [p for p in plans if len(p.cells) > 1]
    if not shared:
        return f"{n_cells} cells, one trial each"
    return (f"{len(plans)} trials stand for {n_cells} cells: {len(shared)} trial(s) each stand "
            f"for cells that differ only in epochs (a shorter cell is the first epochs of the "
            f"longest: the loop is seeded and its schedule does not read the epoch count)")


@dataclass(frozen=True)
class ResolvedSweep:
    """A grid under one preset, every cell a finished and checked config: what the tuner, the
    estimate, the report and the trials read."""

    grid: Grid
    preset: str
    base: Config  # defaults < preset < grid base < carried keys < --seed
    carried: dict[str, Any]  # keys an earlier pipeline stage passed on
    cells: tuple[tuple[Cell, Config], ...]  # each cell with its config, in the grid's order
    plans: tuple[TrialPlan, ...]  # what each Tune trial trains
    smoke_cap: int | None = None  # the batch-size cap of a smoke run (`capped`), if any

    @property
    def replicates(self) -> int:
        """How many seeds each configuration trains under (Grid.replicates)."""
        return self.grid.replicates

    @property
    def max_epochs(self) -> int:
        return max(cfg.epochs for _, cfg in self.cells)

    def batch_sizes(self) -> list[int]:
        return sorted({cfg.batch_size for _, cfg in self.cells})

    def capped(self, n: int) -> ResolvedSweep:
        """The same sweep with every batch size at most `n` (a smoke sample's training split:
        a smoke run checks a data folder of any size); cells whose values become equal are
        kept once. The cap only lowers batch sizes to `n` >= 1, which no rule forbids, so the
        configs are not judged again."""
        grid = self.grid
        axes = dict(grid.axes)
        if "batch_size" in axes:
            axes["batch_size"] = sorted({min(b, n) for b in axes["batch_size"]})
        variants = tuple({**v, "batch_size": min(v["batch_size"], n)} if "batch_size" in v
                         else v for v in grid.variants)
        grid = dataclasses.replace(grid, axes=axes, variants=variants)
        base = self.base.replace(batch_size=min(self.base.batch_size, n))
        cells = tuple((c, base.replace(**c.deltas)) for c in grid.cells())
        return dataclasses.replace(self, grid=grid, base=base, cells=cells,
                                   plans=plan_trials(cells, grid.share_prefixes), smoke_cap=n)


def resolve_base(grid: Grid, preset: str, seed: int | None,
                 carried: dict[str, Any] | None = None) -> Config:
    """Defaults < preset < grid base < keys carried from a previous stage < --seed (not yet
    judged: `resolve` judges it with the cells)."""
    base = Config().replace(**PRESETS[preset]).replace(**grid.base).replace(**(carried or {}))
    return base.replace(seed=seed) if seed is not None else base


def resolve(grid: Grid, preset: str, seed: int | None,
            carried: dict[str, Any] | None = None) -> ResolvedSweep:
    """The sweep of `grid` under `preset`: its base and each cell's config, judged once here
    (ConfigError names the file, the cell and the key), and its trials."""
    carried = dict(carried or {})
    base = resolve_base(grid, preset, seed, carried)
    validate(base, f"{grid.path}: base" + (f" with --seed {seed}" if seed is not None else ""))
    cells = []
    for c in grid.cells():
        cfg = base.replace(**c.deltas)
        validate(cfg, f"{grid.path}: cell {c.as_row()}")
        cells.append((c, cfg))
    return ResolvedSweep(grid, preset, base, carried, tuple(cells),
                         plan_trials(tuple(cells), grid.share_prefixes))


def resolve_each(grid: Grid, presets: list[str], seed: int | None,
                 carried: dict[str, Any] | None = None) -> dict[str, ResolvedSweep | ConfigError]:
    """The sweep under each preset a command can get, before the cluster says which (and so
    before Ray starts); a preset whose configs fail keeps its error. ConfigError (the first
    preset's) when every preset fails: such a grid cannot run at all."""
    out: dict[str, ResolvedSweep | ConfigError] = {}
    for preset in presets:
        try:
            out[preset] = resolve(grid, preset, seed, carried)
        except ConfigError as e:
            out[preset] = e
    if all(isinstance(r, ConfigError) for r in out.values()):
        raise next(iter(out.values()))  # type: ignore[misc]
    return out
