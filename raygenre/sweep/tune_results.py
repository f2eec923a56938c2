"""Tune's results as trial records for the report (which knows nothing of Tune)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raygenre.grid.file import unpack
from raygenre.grid.objective import Objective, best_epoch
from raygenre.paths import RunPaths
from raygenre.report.records import TrialRecord, best_of, whole_checkpoints
from raygenre.storage import Location
from raygenre.training.checkpoints import META_FILE


def trial_dirname(trial: Any) -> str:
    """A trial's folder in the run folder: its id, nothing else (stable across a resume, and
    the id is what every table names)."""
    return trial.trial_id


def trial_records(results: Any, paths: RunPaths, objective: Objective,
                  data_parallel: bool) -> list[TrialRecord]:
    """One record per Tune trial of a ResultGrid, in the grid's order."""
    records = []
    for r in results:
        trial_id = Path(r.path).name  # trial_dirname: the trial id
        flat, variant, members = unpack(r.config)
        seen = (r.metrics or {}).get("epoch")  # the last epoch Tune saw (None if none)
        if data_parallel:
            found = whole_checkpoints(paths.train_run(trial_id), seen)
            best = best_of(found, objective)
            history = found[-1][1]["history"] if found else []
            latest = found[-1][0] if found else None
        else:
            best, latest, history = _tune_checkpoints(r, paths.experiment / trial_id, objective)
        if seen is not None:
            history = [h for h in history if h["epoch"] <= seen]
        error = ""
        if r.error is not None:
            error = (str(r.error).strip().splitlines() or [""])[-1][:300]
        records.append(TrialRecord(
            trial_id=trial_id, config=flat, variant=variant, members=members, history=history,
            error=error, wall_s=(r.metrics or {}).get("time_total_s"), best=best,
            pins=paths.members(trial_id), latest=latest))
    return records


def _tune_checkpoints(result: Any, trial_dir: Location, objective: Objective
                      ) -> tuple[Location | None, Location | None, list[dict[str, Any]]]:
    """(the best checkpoint Tune kept, its latest, the history in the latest) of a one-worker
    trial. Tune kept them by the grid's objective, so its best is the trial's best epoch."""
    if result.checkpoint is None:
        return None, None, []
    latest = trial_dir / Path(result.checkpoint.path).name
    history = json.loads((latest / META_FILE).read_text())["history"]
    kept = [(trial_dir / Path(c.path).name, m) for c, m in (result.best_checkpoints or [])]
    best = best_epoch([m for _, m in kept], objective.metric, objective.mode)
    if best is None:
        return None, latest, history
    return next(d for d, m in kept if m["epoch"] == best["epoch"]), latest, history
