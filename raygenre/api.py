"""raygenre from Python: `run` a grid, `load` what a run wrote. docs/api.md has the example.

The command line (`python -m raygenre.grid`) is a thin layer over the same engine: both build
a `RunOptions` and call `raygenre.sweep.engine.execute`. Nothing heavy is imported here until
a function is called (Ray only once a sweep starts), so `import raygenre` stays quick.

Cells and trials. A *cell* is one point of a grid; a *trial* is Ray Tune's trial. Cells that
differ only in `epochs` are the first epochs of one trial, so Tune runs one trial for several
cells (the main job: 6 trials for 24 cells). raygenre's tables have one row per cell:
`Results.cells` has both ids, `cell_id` (`TRIAL:eN` for the first N epochs of trial TRIAL) and
`trial_id` (Tune's). Ray's own readers work on the run folder as always:
`ray.tune.ExperimentAnalysis(results.run_folder)` lists trials, and `Tuner.restore` is what
`resume=True` calls.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raygenre.grid.options import RunOptions, api_help, api_signature
from raygenre.report import legacy

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn


def run(grid: str | os.PathLike[str], **options: Any) -> Results:
    """Run one sweep of `grid` (a grid name, as `python -m raygenre.grid --list` shows them, or
    a path to a grid .yaml file) and return what it wrote (`Results`, results/<grid>/).

    Each keyword is the command line's option of the same name (`docs/cli.md`; the list
    below, like the signature, is made from RunOptions' fields): paths may be `Path`s;
    `resume="auto"` continues a run if there is one, else starts it, so one cell serves a
    first run and a re-run after a disconnect; `logger` takes a name, a list, or
    "mlflow,wandb".

    Ray: started for the sweep and stopped after it, unless this process had already called
    `ray.init()`, in which case that Ray is used and left running.

    Raises (each with a message that says what to do): `ConfigError` for a bad option, an
    unknown or invalid grid, or a run folder this call may not use as asked (an existing run
    without resume/fresh, or the same grid's run on other data); `DataError` for data that
    cannot be used; `NoResults` when every trial failed (`load(path).cells` then says why);
    `Interrupted` when the sweep stopped early (call again with `resume=True`). The pipeline
    (`python -m raygenre.grid all`) is the command line's.

    Keywords:
    """
    from raygenre.config import ConfigError

    # The keywords are RunOptions' (its fields' declarations), bound as Python binds a call.
    bound = inspect.signature(run).bind(grid, **options)
    bound.apply_defaults()
    if os.fspath(grid) == "all":
        raise ConfigError("raygenre.run runs one grid; the study's pipeline is the command "
                          "line's: python -m raygenre.grid all")
    opts = RunOptions(**{**bound.arguments, "grid": os.fspath(grid)})
    return run_options(opts)



def run_options(opts: RunOptions) -> Results:
    """`run` for options already built (as the command line builds them)."""
    from raygenre.sweep.engine import execute

    return load(execute(opts))


def load(results_dir: str | os.PathLike[str]) -> Results:
    """What a sweep wrote in `results_dir` (results/<grid>/, as `run` or the command line left
    it). Needs cells.csv (trials.csv in a folder written before 2026-12-06, read with today's
    names: `raygenre.report.legacy`); best.json and configs.csv are there once a cell
    reported."""
    path = Path(results_dir).expanduser().resolve()
    if legacy.cells_file(path) is None:
        raise FileNotFoundError(
            f"{path}: no {legacy.CELLS_FILE}; give the folder of one sweep's results, "
            f"results/<grid>/ (results/<grid>-smoke/ for a smoke run)")
    return Results(path)


@dataclass(frozen=True)
class Results:
    """One sweep's results folder, read on first use of each part.

    `cells` has one row per cell of the grid and `history` one per cell and epoch; `configs`
    one per configuration (its seed replicates together; None when the folder has no
    configs.csv); `best` is best.json: the chosen cell (`cell_id`, its Tune `trial_id`,
    `config`), the objective with its `interval`, `verdict` (the sentence), `tied_with`
    (configurations within noise of it), `test/acc`, `epoch` and `checkpoint`; an empty dict
    when no cell reported. docs/results.md describes every column and key.
    """

    path: Path

    @cached_property
    def cells(self) -> pd.DataFrame:
        found = legacy.cells_file(self.path)
        return _csv(found if found is not None else self.path / legacy.CELLS_FILE)

    @cached_property
    def history(self) -> pd.DataFrame:
        return _csv(self.path / "history.csv")

    @cached_property
    def configs(self) -> pd.DataFrame | None:
        f = self.path / "configs.csv"
        return _csv(f) if f.exists() else None

    @cached_property
    def best(self) -> dict[str, Any]:
        f = self.path / "best.json"
        best = json.loads(f.read_text()) if f.exists() else {}
        return legacy.current_best(best)

    @property
    def summary(self) -> str:
        """summary.md: the verdict, the test figures, the cells table."""
        return (self.path / "summary.md").read_text()

    @property
    def run_folder(self) -> str:
        """Ray's run folder (a path or a bucket URI): Tune's state and checkpoints, what
        `ray.tune.ExperimentAnalysis` and `Tuner.restore` read."""
        return self._need("run_folder")

    def checkpoint(self, cell_id: str | None = None) -> str:
        """Where the weights of a cell's judged epoch are (a folder, or a bucket URI): the
        chosen cell's (the one its test figures come from) by default. A cell that ends
        before its trial's last epoch has its own copy, kept by the trial; cells.csv's
        `checkpoint` column names each."""
        if cell_id is None:
            return self._need("checkpoint")
        rows = self.cells[self.cells["cell_id"] == cell_id]
        if rows.empty:
            raise KeyError(f"no cell {cell_id!r} in {self.path / legacy.CELLS_FILE}")
        where = rows.iloc[0]["checkpoint"]
        if not isinstance(where, str) or not where:
            raise FileNotFoundError(f"cell {cell_id}: no checkpoint was kept (it reported "
                                    f"nothing; see its error in {legacy.CELLS_FILE})")
        return where

    def load_model(self, cell_id: str | None = None
                   ) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
        """(features, model, meta) of `checkpoint(cell_id)`, on the CPU in eval mode:
        `model(features(x))` gives class scores for a batch of 5-s segments `x`
        (22 050 Hz mono, batch x samples); `meta` holds its config, the runtime facts it was
        built with and its epoch's metrics. Reads no data split (no test read is recorded)."""
        from raygenre.storage import Location
        from raygenre.training.checkpoints import load_checkpoint
        from raygenre.training.scratch import checkpoint_scratch

        with checkpoint_scratch() as d:
            where = Location.parse(self.checkpoint(cell_id), "checkpoint")
            return load_checkpoint(where.download(Path(d)))

    def _need(self, key: str) -> Any:
        if key not in self.best:
            what = ("no cell reported (see cells.csv's error column)" if not self.best
                    else "written by an older raygenre")
            raise KeyError(f"{self.path / 'best.json'} has no {key!r}: {what}")
        return self.best[key]

    def __repr__(self) -> str:
        return f"Results({str(self.path)!r})"


def _csv(path: Path) -> pd.DataFrame:
    import pandas as pd  # imported here: `import raygenre` should not cost pandas' import

    frame = pd.read_csv(path)
    return frame.rename(columns=legacy.columns_of(list(frame.columns)))


# help(raygenre.run), an IDE and `inspect.signature` see every keyword, with its type, default
# and help, from the one declaration of each option (grid.options.RunOptions).
run.__signature__ = api_signature(Results)  # type: ignore[attr-defined]
run.__doc__ = (run.__doc__ or "").rstrip() + "\n" + api_help() + "\n"

__all__: Sequence[str] = ["Results", "RunOptions", "load", "run", "run_options"]
