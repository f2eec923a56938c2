"""ASHA whose rungs and stop decisions survive `Tune.restore`, kept through ASHA's public
`save`/`restore` (a pickle of the scheduler's state, as Ray's own schedulers and searchers
checkpoint theirs): no read of ASHA's private attributes."""

from __future__ import annotations

import json
import pickle
import tempfile
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from raygenre.paths import ASHA_STATE_NAME
from raygenre.storage import Location

# Where sweeps started before the rename kept the state (why renamed: RunPaths.asha_state). Tune
# puts this file back as it was at each resume, so it is read only until the new one exists.
LEGACY_NAME = "asha_rungs.json"


def _state_bytes(state_file: str) -> bytes | None:
    """The saved state of the sweep whose state file this is (or its legacy one); None before
    any."""
    path = Location(state_file)
    for p in (path, path.parent / LEGACY_NAME):
        if p.exists():
            return p.read_bytes()
    return None


def _is_json(data: bytes) -> bool:
    """Sweeps started before the state was ASHA's own `save` kept it as JSON (rungs,
    decisions); a pickle never starts with '{'."""
    return data.lstrip()[:1] == b"{"


def stopped_trials(state_file: str) -> set[str]:
    """The trials ASHA has stopped (early, or at its last rung)."""
    data = _state_bytes(state_file)
    if data is None:
        return set()
    if _is_json(data):
        return set(json.loads(data).get("stopped", []))
    return set(pickle.loads(data).get("_stopped", ()))  # our own attribute in ASHA's `save`


class ResumableASHA(ASHAScheduler):
    """ASHA whose rung records and stop decisions are kept in a file in the run folder.

    Tune rebuilds the scheduler from the pickle taken when the sweep started, so without this a
    resumed sweep forgets every rung and lets the next trial at each rung through uncontested.
    And Tune saves trial states only now and then: a driver that dies between ASHA's stop and
    that save restores the stopped trial as running, and plain ASHA, finding the trial already
    in the rung, would let it continue to the end. Every decision is therefore saved here on
    each result (before Tune acts on it), with ASHA's public `save`, and read back with its
    `restore` on first use; a trial stopped once is stopped again whenever it reports.
    """

    def __init__(self, state_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._state_file = state_file
        self._settings = dict(sorted(kwargs.items()))  # what a saved state must match
        self._stopped: set[str] = set()
        self._added: set[str] = set()  # trials ASHA knows (has placed in a bracket)
        self._mode_given: str | None = kwargs.get("mode")
        self._loaded = False

    def __setstate__(self, state: dict) -> None:
        # A scheduler pickled by an earlier raygenre (an interrupted sweep's tuner.pkl) has
        # none of these; tuner.py made every one with time_attr "epoch", and before any result.
        state = {"_settings": {"time_attr": "epoch"}, "_added": set(), "_mode_given": None,
                 **state}
        self.__dict__.update(state)
        self._loaded = False  # an unpickled copy may be older than the file
        path = Location(self._state_file)
        if path.name == LEGACY_NAME:  # pickled at the start of a run made before the rename
            self._state_file = str(path.parent / ASHA_STATE_NAME)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        data = _state_bytes(self._state_file)
        if data is None:
            return
        if _is_json(data):
            self._replay(json.loads(data))
            return
        state_file, settings = self._state_file, self._settings
        with tempfile.TemporaryDirectory() as folder:
            saved = Path(folder) / "asha.pkl"
            saved.write_bytes(data)
            self.restore(str(saved))  # ASHA's public restore: its state, and ours with it
        self._state_file, self._loaded = state_file, True
        if self._settings != settings:
            raise ValueError(f"{state_file}: saved by an ASHA with settings {self._settings}, "
                             f"not this sweep's {settings}")

    def _replay(self, saved: dict) -> None:
        """A state saved as JSON by an earlier raygenre: each rung's records fed back as the
        results they were, lowest rung first and in the order they came, through ASHA's public
        calls, so the rungs stand as they stood. (A record at max_t comes back unrecorded:
        ASHA stops a trial there before reading its rung, so no decision depends on it.)"""
        self._stopped = set(saved.get("stopped", []))
        time_attr = self._settings.get("time_attr", "training_iteration")  # (ASHA's default)
        sign = -1.0 if self._mode_given == "min" else 1.0  # rewards were kept times this
        for bracket in saved["brackets"]:  # one per ASHA bracket; raygenre runs one
            for milestone, recorded in reversed(bracket):
                for trial_id, reward in recorded.items():
                    trial = SimpleNamespace(trial_id=trial_id)
                    if trial_id not in self._added:
                        self.on_trial_add(None, trial)
                    super().on_trial_result(None, trial, {time_attr: milestone,
                                                          self.metric: sign * reward})

    def set_search_properties(self, metric: str | None, mode: str | None,
                              **spec: Any) -> bool:
        """(Tune hands the sweep's metric and mode over here; the mode is kept for `_replay`.)"""
        self._mode_given = mode or self._mode_given
        return super().set_search_properties(metric, mode, **spec)

    def _save(self) -> None:
        target = Location(self._state_file)
        local = target.local_path
        with tempfile.TemporaryDirectory() as folder:
            # Beside the target when local, so the rename is atomic (a reader sees the old
            # state or the new one, never half); a bucket's PUT is atomic by itself.
            tmp = (local.parent if local is not None else Path(folder)) / \
                f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
            tmp.parent.mkdir(parents=True, exist_ok=True)
            self.save(str(tmp))  # ASHA's public save: a pickle of the scheduler's state
            if local is not None:
                tmp.replace(local)
            else:
                target.put_file(tmp)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._load()
        super().on_trial_add(tune_controller, trial)
        self._added.add(trial.trial_id)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self._load()
        if trial.trial_id in self._stopped:
            return TrialScheduler.STOP
        if trial.trial_id not in self._added:  # restored while running
            self.on_trial_add(tune_controller, trial)
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP:
            self._stopped.add(trial.trial_id)
        self._save()
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._load()
        if trial.trial_id not in self._added:
            self.on_trial_add(tune_controller, trial)
        super().on_trial_complete(tune_controller, trial, result)
        self._added.discard(trial.trial_id)
        self._save()

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_remove(tune_controller, trial)
        self._added.discard(trial.trial_id)
