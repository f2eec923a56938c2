"""ASHA's rung records survive a restore (Tune rebuilds the scheduler from its first pickle)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
from ray.tune.schedulers import TrialScheduler

from raygenre.sweep.asha import ResumableASHA


def _asha(tmp_path: Path) -> ResumableASHA:
    return _asha_at(tmp_path / "rungs.json")


def _asha_at(state: Path) -> ResumableASHA:
    return ResumableASHA(str(state), time_attr="epoch", metric="val/acc", mode="max", max_t=9,
                         grace_period=1, reduction_factor=3)


def _result(epoch: int, acc: float) -> dict:
    return {"epoch": epoch, "val/acc": acc}


def test_rungs_survive_restore_and_a_stopped_trial_stays_judged(tmp_path: Path) -> None:
    sched = _asha(tmp_path)
    as_started = pickle.dumps(sched)  # what tuner.pkl holds: the scheduler before any result
    trials = [SimpleNamespace(trial_id=f"t{i}") for i in range(4)]
    # The first at a rung goes on; later ones below the top third of the rung stop.
    for t, acc, action in zip(trials[:3], (0.9, 0.8, 0.7), ("CONTINUE", "STOP", "STOP"),
                              strict=True):
        sched.on_trial_add(None, t)
        assert sched.on_trial_result(None, t, _result(1, acc)) == getattr(TrialScheduler,
                                                                          action)

    # Without the saved rungs, a fresh scheduler lets a weak trial through (empty rung).
    fresh = ResumableASHA(str(tmp_path / "other.json"), time_attr="epoch", metric="val/acc",
                          mode="max", max_t=9, grace_period=1, reduction_factor=3)
    fresh.on_trial_add(None, trials[3])
    assert fresh.on_trial_result(None, trials[3], _result(1, 0.1)) == TrialScheduler.CONTINUE

    restored = pickle.loads(as_started)
    restored.on_trial_add(None, trials[3])
    assert restored.on_trial_result(None, trials[3], _result(1, 0.1)) == TrialScheduler.STOP
    rung_1 = dict(restored._brackets[0]._rungs[-1][1])
    assert set(rung_1) == {"t0", "t1", "t2", "t3"}
    # A trial restored mid-run (never re-added) is handled, not a KeyError.
    again = pickle.loads(as_started)
    assert again.on_trial_result(None, trials[0], _result(3, 0.95)) == TrialScheduler.CONTINUE


def test_a_stopped_trial_stays_stopped_when_it_comes_back(tmp_path: Path) -> None:
    """The driver died after ASHA stopped t1 but before Tune saved that: Tune restores t1 as
    running from its epoch-1 checkpoint and it reports epoch 1 again. Plain ASHA finds t1 in
    the rung already and lets it run to the end; this one stops it again, and at any later
    epoch too."""
    sched = _asha(tmp_path)
    as_started = pickle.dumps(sched)
    t0, t1 = SimpleNamespace(trial_id="t0"), SimpleNamespace(trial_id="t1")
    for t in (t0, t1):
        sched.on_trial_add(None, t)
    assert sched.on_trial_result(None, t0, _result(1, 0.9)) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, t1, _result(1, 0.5)) == TrialScheduler.STOP

    plain = ResumableASHA(str(tmp_path / "plain.json"), time_attr="epoch", metric="val/acc",
                          mode="max", max_t=9, grace_period=1, reduction_factor=3)
    plain._brackets = pickle.loads(pickle.dumps(sched._brackets))  # rungs, not decisions
    assert plain.on_trial_result(None, t1, _result(1, 0.5)) == TrialScheduler.CONTINUE

    restored = pickle.loads(as_started)
    assert restored.on_trial_result(None, t1, _result(1, 0.5)) == TrialScheduler.STOP
    assert restored.on_trial_result(None, t1, _result(2, 0.95)) == TrialScheduler.STOP
    assert restored.on_trial_result(None, t0, _result(2, 0.9)) == TrialScheduler.CONTINUE


def test_tunes_restore_leaves_the_asha_state_in_the_run_folder(tmp_path: Path) -> None:
    """On a restore Tune copies the run folder's top-level files that its own code reads (by
    suffix) into its driver folder, and uploads that folder over the run folder at every state
    save. A state file among them went back, at each save of a resumed sweep, to what it held
    when the sweep resumed: its later stops were lost and the sweep, finished, said it was
    interrupted. Ray's own sync-down, on a run folder as raygenre leaves it."""
    from types import SimpleNamespace

    import pyarrow.fs
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    from raygenre.paths import RunPaths
    from raygenre.storage import Location

    paths = RunPaths(storage=Location.parse(str(tmp_path / "runs")), name="g",
                     results_root=tmp_path / "results")
    run = tmp_path / "runs" / "g"
    run.mkdir(parents=True)
    for name in (paths.asha_state.name, paths.manifest.name, "tuner.pkl"):
        (run / name).write_text("{}")
    staging = tmp_path / "driver_artifacts"
    storage = SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem(),
                              experiment_fs_path=str(run),
                              experiment_driver_staging_path=str(staging))
    _ExperimentCheckpointManager(storage=storage, checkpoint_period="auto",
                                 ).sync_down_experiment_state()
    copied = {p.name for p in staging.iterdir()}
    assert "tuner.pkl" in copied and paths.manifest.name in copied  # the mechanism is real
    assert paths.asha_state.name not in copied


def test_a_run_started_under_the_old_state_name_resumes_from_it(tmp_path: Path) -> None:
    """A sweep started before the rename pickled the old path into tuner.pkl: the restored
    scheduler reads the old file until it writes the new one, and only the new one after."""
    from raygenre.paths import ASHA_STATE_NAME
    from raygenre.sweep.asha import LEGACY_NAME, stopped_trials

    old = ResumableASHA(str(tmp_path / LEGACY_NAME), time_attr="epoch", metric="val/acc",
                        mode="max", max_t=9, grace_period=1, reduction_factor=3)
    as_started = pickle.dumps(old)
    t0, t1, t2 = (SimpleNamespace(trial_id=f"t{i}") for i in range(3))
    for t in (t0, t1):
        old.on_trial_add(None, t)
    old.on_trial_result(None, t0, _result(1, 0.9))
    assert old.on_trial_result(None, t1, _result(1, 0.5)) == TrialScheduler.STOP
    assert (tmp_path / LEGACY_NAME).exists() and not (tmp_path / ASHA_STATE_NAME).exists()

    restored = pickle.loads(as_started)
    assert restored.on_trial_result(None, t1, _result(1, 0.5)) == TrialScheduler.STOP
    restored.on_trial_add(None, t2)
    assert restored.on_trial_result(None, t2, _result(1, 0.1)) == TrialScheduler.STOP
    assert stopped_trials(str(tmp_path / ASHA_STATE_NAME)) == {"t1", "t2"}
    (tmp_path / LEGACY_NAME).unlink()
    assert stopped_trials(str(tmp_path / ASHA_STATE_NAME)) == {"t1", "t2"}


def test_a_state_saved_as_json_by_an_earlier_raygenre_is_replayed(tmp_path: Path) -> None:
    """An interrupted sweep's state in the format raygenre wrote before ASHA's own `save`
    (rungs highest first, rewards times the mode's sign): its rungs are fed back through
    ASHA's public calls and judge as they did, its stops hold, and the next save is ASHA's."""
    from raygenre.paths import ASHA_STATE_NAME
    from raygenre.sweep.asha import stopped_trials

    state = tmp_path / ASHA_STATE_NAME
    state.write_text(json.dumps({"num_stopped": 2, "stopped": ["t1", "t2"], "brackets": [
        [[9, {}], [3, {"t0": 0.95}], [1, {"t0": 0.9, "t1": 0.8, "t2": 0.7}]]]}))
    sched = _asha_at(state)
    t = {i: SimpleNamespace(trial_id=f"t{i}") for i in range(5)}
    sched.on_trial_add(None, t[3])
    # Rung 1 holds 0.9, 0.8, 0.7 (cut at 0.833): 0.82 stops; an empty rung would pass it.
    assert sched.on_trial_result(None, t[3], _result(1, 0.82)) == TrialScheduler.STOP
    assert sched.on_trial_result(None, t[1], _result(1, 0.99)) == TrialScheduler.STOP
    assert sched.on_trial_result(None, t[0], _result(3, 0.1)) == TrialScheduler.CONTINUE
    sched.on_trial_add(None, t[4])
    assert sched.on_trial_result(None, t[4], _result(1, 0.95)) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, t[4], _result(3, 0.5)) == TrialScheduler.STOP  # < 0.95
    assert not state.read_bytes().startswith(b"{")
    assert stopped_trials(str(state)) == {"t1", "t2", "t3", "t4"}


def test_a_state_saved_under_other_asha_settings_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "rungs.state"
    sched = _asha_at(state)
    sched.on_trial_add(None, SimpleNamespace(trial_id="t0"))
    sched.on_trial_result(None, SimpleNamespace(trial_id="t0"), _result(1, 0.5))
    other = ResumableASHA(str(state), time_attr="epoch", metric="val/acc", mode="max",
                          max_t=27, grace_period=1, reduction_factor=3)
    with pytest.raises(ValueError, match=r"rungs.state: saved by an ASHA with settings .*"
                                         r"'max_t': 9.*not this sweep's .*'max_t': 27"):
        other.on_trial_add(None, SimpleNamespace(trial_id="t1"))
