"""What a run folder holds, and whether a command may start it, resume it, or must refuse.

A run folder is never overwritten silently. `--resume` continues one only when everything that
shaped its numbers is the same: the grid file's content, the config it resolved to, the prepared
data, the seed, and the arithmetic of each trial (torch threads, CPUs and GPUs per worker,
workers per trial). A resume with other values would change the numbers without a word.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from typing import Any

from raygenre.config import Config, ConfigError
from raygenre.data.prepared import Prepared
from raygenre.grid.resolved import ResolvedSweep
from raygenre.paths import RunPaths
from raygenre.storage import Location, StorageError
from raygenre.sweep.inputs import BUILTIN_SETS
from raygenre.sweep.plan import Plan

# The run manifest's record of which data set the run was made on (`data_source`): kept beside
# the `fingerprint`, not in it. The fingerprint keys the data by its content
# (prepared.path.name), which is what decides whether numbers may be reused; the source is what
# a person recognises, and it is known before the data is read, so a run on another data set is
# refused before any work.
SOURCE_KEY = "data_source"


def fingerprint(sweep: ResolvedSweep, prepared: Prepared, plan: Plan, smoke: bool
                ) -> dict[str, Any]:
    """Everything that shapes a sweep's numbers, as plain values: the run's manifest, and what
    the pipeline compares before reusing a finished stage (best.json keeps it as
    `shaped_by`)."""
    grid = sweep.grid
    m = {"grid": grid.name,
         "grid_file_sha256": hashlib.sha256(grid.path.read_bytes()).hexdigest(),
         "base": sweep.base.to_dict(), "carried": sweep.carried, "draw_seed": grid.draw_seed,
         "data": prepared.path.name,  # the prepared set's key: files, sizes, mtimes, settings
         "smoke": smoke, "workers_per_trial": plan.workers, "threads": plan.threads,
         "cpus_per_worker": round(plan.worker_cpus, 4), "gpus_per_worker": plan.worker_gpus}
    return json.loads(json.dumps(m))  # tuples -> lists, as read back


def upgraded(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored fingerprint as this version writes it: a config key added since the run was
    made reads as its default, which is the behaviour the run had (a new key defaults to
    what came before), so an upgrade alone does not refuse a resume or redo a stage."""
    base = stored.get("base")
    if not isinstance(base, dict):
        return stored
    defaults = json.loads(json.dumps(Config().to_dict()))
    return {**stored, "base": {**{k: v for k, v in defaults.items() if k not in base}, **base}}


def differences(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between a stored fingerprint (upgraded first) and this command's."""
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


# --resume auto (RunOptions.resume == AUTO): what a notebook cell re-run after a disconnect needs.
AUTO = "auto"


def resolve_resume(paths: RunPaths, resume: bool | str) -> bool:
    """Whether this command resumes: `--resume auto` continues the run in the folder when
    there is one and starts one when there is none, like Ray Tune's `Tuner.can_restore`
    (RAY_NOTES, "Resume and failures"), so the same command serves both. What it continues is
    held to every check an explicit `--resume` gets: a changed config is refused with the
    differences listed (`check_manifest`), another data set too (`refuse_other_data`), and a
    folder Tune cannot restore is refused, not deleted (a disconnect in the seconds between
    the manifest and Tune's first state leaves one: `--fresh` clears it)."""
    if resume == AUTO:
        return paths.experiment.exists()
    return bool(resume)


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
    stored = json.loads(paths.manifest.read_text())
    stored.pop(SOURCE_KEY, None)
    diffs = differences(stored, now)
    if diffs:
        raise ConfigError(
            f"--resume: this command differs from the run stored in {paths.experiment} "
            f"({'; '.join(diffs)}). Resume with the original grid, data and options (for the "
            f"arithmetic: --cpus-per-trial, --gpus-per-trial, --workers-per-trial), or start "
            f"over with --fresh.")


def clear_tensorboard(paths: RunPaths) -> int:
    """Remove the TensorBoard runs an earlier sweep of this grid left in its results folder;
    returns how many. A new run starts here (not a resume): those event files describe runs
    that are no longer in the run folder, and TensorBoard would draw them beside this sweep's
    as if they were one."""
    folder = paths.tensorboard
    if not folder.is_dir():
        return 0
    old = [p for p in folder.iterdir() if p.is_dir()]
    for p in old:
        shutil.rmtree(p)
    return len(old)


def write_manifest(paths: RunPaths, now: dict[str, Any], source: str | None = None) -> None:
    paths.experiment.mkdir()
    record = {**now, SOURCE_KEY: source} if source else now
    paths.manifest.write_text(json.dumps(record, indent=1))


def data_source(data: str | None) -> str:
    """--data as one spelling per data set: the built-in set's name, an absolute path or a
    URI (what a run and its results record, and what a later command is compared with)."""
    if data is None or data in ("builtin", "builtin:synthetic"):
        return "builtin:synthetic"
    if data in BUILTIN_SETS:
        return data
    return Location.parse(data, "--data").uri


def stored_sources(paths: RunPaths) -> dict[str, str]:
    """The data source of what is already at these paths: {"run": ...} from the run folder's
    manifest, {"results": ...} from the results folder's best.json. A record written before
    sources were kept says nothing (its `data` is the path as it was typed, relative to a
    folder no longer known)."""
    out = {}
    for key, file in (("run", paths.manifest), ("results", paths.results / "best.json")):
        try:
            src = json.loads(file.read_text()).get(SOURCE_KEY) if file.exists() else None
        except (OSError, ValueError):
            src = None  # an unreadable record is for the resume checks to report
        if src:
            out[key] = src
    return out


def refuse_other_data(paths: RunPaths, source: str, resume: bool, fresh: bool) -> None:
    """Refuse, before any work, to put a sweep on one data set where the same grid's sweep on
    another data set lives: its run folder would be taken over or its results overwritten,
    and two data sets' numbers would pass for one. (Keying the folders by data instead would
    have the same command write somewhere the user never named, and `--resume` would have to
    guess which; one place per name, and a refusal that says how to name a second, keeps
    every folder's meaning plain.)

    `--fresh` replaces what is there, as it says. On `--resume` the run folder's source is
    not held against the command: the same files at another path resume to the same numbers,
    and the content check (`check_manifest`) refuses other files once the data is read; nor
    are results made from that run's source."""
    if fresh:
        return
    stored = stored_sources(paths)
    if resume:
        run_source = stored.pop("run", None)
        if stored.get("results") == run_source:
            stored.pop("results", None)
    where = {"run": f"the run folder {paths.experiment} (--storage)",
             "results": f"the results folder {paths.results} (--results)"}
    others = [f"{where[k]} holds it on {s}" for k, s in stored.items() if s != source]
    if not others:
        return
    raise ConfigError(
        f"{paths.name!r} was already run on other data: {'; '.join(others)}. This command's "
        f"data is {source}. To keep both, give this run folders of its own: --results DIR and "
        f"--storage DIR (e.g. --results results-{_short(source)} --storage "
        f"{paths.storage.uri.rstrip('/')}-{_short(source)}); to replace the old one, add "
        f"--fresh.")


def _short(source: str) -> str:
    """A folder-name suffix for a data source (its last path part)."""
    tail = source.rstrip("/").rsplit("/", 1)[-1].replace("builtin:", "")
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in tail) or "data"
