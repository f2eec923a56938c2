"""ASHA whose rungs and stop decisions survive `Tuner.restore`."""

from __future__ import annotations

import json
from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from raygenre.paths import ASHA_STATE_NAME
from raygenre.storage import Location

# Where sweeps started before the rename kept the state (why renamed: RunPaths.asha_state). Tune
# puts this file back as it was at each resume, so it is read only until the new one exists.
LEGACY_NAME = "asha_rungs.json"


def read_state(state_file: str) -> dict[str, Any] | None:
    """The saved rungs and decisions of the sweep whose state file this is; None before any."""
    path = Location(state_file)
    for p in (path, path.parent / LEGACY_NAME):
        if p.exists():
            return json.loads(p.read_text())
    return None


def stopped_trials(state_file: str) -> set[str]:
    """The trials ASHA has stopped (early, or at its last rung)."""
    return set((read_state(state_file) or {}).get("stopped", []))


class ResumableASHA(ASHAScheduler):
    """ASHA whose rung records and stop decisions are kept in a file in the run folder.

    Tune rebuilds the scheduler from the pickle taken when the sweep started, so without this a
    resumed sweep forgets every rung and lets the next trial at each rung through uncontested.
    And Tune saves trial states only now and then: a driver that dies between ASHA's stop and
    that save restores the stopped trial as running, and plain ASHA, finding the trial already
    in the rung, would let it continue to the end. Every decision is therefore written here on
    each result (before Tune acts on it) and read back on first use; a trial stopped once is
    stopped again whenever it reports.
    """

    def __init__(self, state_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._state_file = state_file
        self._stopped: set[str] = set()
        self._loaded = False

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._loaded = False  # an unpickled copy may be older than the file
        path = Location(self._state_file)
        if path.name == LEGACY_NAME:  # pickled at the start of a run made before the rename
            self._state_file = str(path.parent / ASHA_STATE_NAME)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        saved = read_state(self._state_file)
        if saved is None:
            return
        path = self._state_file
        for bracket, rungs in zip(self._brackets, saved["brackets"], strict=True):
            for (milestone, recorded), (saved_milestone, saved_recorded) in zip(
                    bracket._rungs, rungs, strict=True):
                if milestone != saved_milestone:
                    raise ValueError(f"{path}: rung {saved_milestone} does not match this "
                                     f"sweep's ASHA settings (rung {milestone})")
                recorded.update(saved_recorded)
        self._num_stopped = saved["num_stopped"]
        self._stopped = set(saved.get("stopped", []))

    def _save(self) -> None:
        state = {"num_stopped": self._num_stopped, "stopped": sorted(self._stopped),
                 "brackets": [[[m, {k: float(v) for k, v in rec.items()}] for m, rec in b._rungs]
                              for b in self._brackets]}
        Location(self._state_file).write_text(json.dumps(state, indent=1))

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._load()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self._load()
        if trial.trial_id in self._stopped:
            return TrialScheduler.STOP
        if trial.trial_id not in self._trial_info:  # restored while running
            super().on_trial_add(tune_controller, trial)
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP:
            self._stopped.add(trial.trial_id)
        self._save()
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._load()
        if trial.trial_id not in self._trial_info:
            super().on_trial_add(tune_controller, trial)
        super().on_trial_complete(tune_controller, trial, result)
        self._save()
