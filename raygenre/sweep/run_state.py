"""What a run folder holds, and whether a command may start it, resume it, or must refuse.

A run folder is never overwritten silently. `--resume` continues one only when everything that
shaped its numbers is the same: the grid file's content, the config it resolved to, the prepared
data, the seed, and the arithmetic of each trial (torch threads, CPUs and GPUs per worker,
workers per trial). A resume with other values would change the numbers without a word.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from raygenre.config import Config, ConfigError
from raygenre.data import Prepared
from raygenre.gridfile import Grid
from raygenre.paths import RunPaths
from raygenre.storage import StorageError
from raygenre.sweep.plan import Plan


def shaped_by(grid: Grid, base: Config, prepared: Prepared, plan: Plan, smoke: bool,
              carried: dict[str, Any]) -> dict[str, Any]:
    """Everything that shapes a sweep's numbers, as plain values: the run's manifest, and what
    the pipeline compares before reusing a finished stage."""
    m = {"grid": grid.name,
         "grid_file_sha256": hashlib.sha256(grid.path.read_bytes()).hexdigest(),
         "base": base.to_dict(), "carried": carried, "draw_seed": grid.draw_seed,
         "data": prepared.path.name,  # the prepared set's key: files, sizes, mtimes, settings
         "smoke": smoke, "workers_per_trial": plan.workers, "threads": plan.threads,
         "cpus_per_worker": round(plan.worker_cpus, 4), "gpus_per_worker": plan.worker_gpus}
    return json.loads(json.dumps(m))  # tuples -> lists, as read back


def upgraded(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored `shaped_by` as this version writes it: a config key added since the run was
    made reads as its default, which is the behaviour the run had (a new key defaults to
    what came before), so an upgrade alone does not refuse a resume or redo a stage."""
    base = stored.get("base")
    if not isinstance(base, dict):
        return stored
    defaults = json.loads(json.dumps(Config().to_dict()))
    return {**stored, "base": {**{k: v for k, v in defaults.items() if k not in base}, **base}}


def differences(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between a stored `shaped_by` (upgraded first) and this command's."""
    return _diff(upgraded(then), now)


def _diff(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    out = []
    for k in sorted(set(then) | set(now)):
        if then.get(k) == now.get(k):
            continue
        if isinstance(then.get(k), dict) and isinstance(now.get(k), dict):
            out += [f"{k}.{d}" for d in _diff(then[k], now[k])]
        else:
            out.append(f"{k}: stored {then.get(k)!r}, now {now.get(k)!r}")
    return out


def refuse_or_restore(paths: RunPaths, resume: bool, fresh: bool) -> bool:
    """Decide, before any work, what to do with a run already in the folder: True to restore.
    Whether the stored run matches this command is checked later (`check_manifest`), once the
    data and the plan are known."""
    from ray import tune

    if not paths.experiment.exists():
        if resume:
            raise ConfigError(f"--resume: no run of {paths.name!r} in {paths.experiment}")
        return False
    if fresh:
        try:
            paths.experiment.rmtree()
        except StorageError as e:
            raise StorageError(f"--fresh: {e}") from e
        return False
    if not resume:
        raise ConfigError(
            f"a run of {paths.name!r} already exists in {paths.experiment}. Continue it with "
            f"--resume, or start over with --fresh (deletes it).")
    if not tune.Tuner.can_restore(str(paths.experiment)):
        raise ConfigError(f"--resume: {paths.experiment} holds no restorable run; "
                          f"run without --resume (add --fresh to clear the folder)")
    return True


def check_manifest(paths: RunPaths, now: dict[str, Any]) -> None:
    """Refuse to resume a run that this command would not have produced."""
    if not paths.manifest.exists():
        return
    diffs = differences(json.loads(paths.manifest.read_text()), now)
    if diffs:
        raise ConfigError(
            f"--resume: this command differs from the run stored in {paths.experiment} "
            f"({'; '.join(diffs)}). Resume with the original grid, data and options (for the "
            f"arithmetic: --cpus-per-trial, --gpus-per-trial, --workers-per-trial), or start "
            f"over with --fresh.")


def write_manifest(paths: RunPaths, now: dict[str, Any]) -> None:
    paths.experiment.mkdir()
    paths.manifest.write_text(json.dumps(now, indent=1))
