"""The sweep's progress line: its time left weighs each trial's epochs by what they cost."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest

from raygenre.sweep.callbacks import PlannedTrial, Progress


def _planned() -> list[PlannedTrial]:
    # Like `best`: three long, costly trials and six short, cheaper ones (estimated s/epoch).
    return ([PlannedTrial({"variant": "cnn", "seed": s}, 80, 20.0) for s in range(3)]
            + [PlannedTrial({"variant": "cnn1", "seed": s}, 20, 10.0) for s in range(3)]
            + [PlannedTrial({"variant": "linear", "seed": s}, 20, 1.0) for s in range(3)])


def _trial(cells: dict, epochs: int, done: int, wall: float) -> SimpleNamespace:
    return SimpleNamespace(trial_id=f"{cells['variant']}{cells['seed']}", status="RUNNING",
                           config={"epochs": epochs, "cells": cells},
                           last_result={"epoch": done, "time_total_s": wall})


def test_time_left_weighs_trials_by_their_cost_and_counts_trials_not_created() -> None:
    progress = Progress(_planned(), concurrency=2, metric="val/acc", mode="max")
    # Two long trials at epoch 2, each epoch taking 48 s here (2.4x the estimate's 20 s).
    trials = [_trial({"variant": "cnn", "seed": s}, 80, 2, 96.0) for s in (0, 1)]
    left = progress.minutes_left(trials, [None, None])
    est_left = 2 * 78 * 20.0 + 80 * 20.0 + 3 * 20 * 10.0 + 3 * 20 * 1.0
    assert left == pytest.approx(est_left * 2.4 / 2 / 60)
    # What it said before: every unstarted trial as long and as costly as the running ones.
    assert left < (2 * 78 + 7 * 80) * 48.0 / 2 / 60 / 1.5


def test_finished_trials_add_nothing_left_but_calibrate() -> None:
    progress = Progress(_planned()[:2], concurrency=1, metric="val/acc", mode="max")
    trials = [_trial({"variant": "cnn", "seed": 0}, 80, 80, 80 * 10.0),
              _trial({"variant": "cnn", "seed": 1}, 80, 40, 40 * 10.0)]
    assert progress.minutes_left(trials, ["completed", None]) == pytest.approx(40 * 10.0 / 60)
    assert progress.minutes_left(trials[:1], ["completed"]) == pytest.approx(80 * 10.0 / 60)
    assert progress.minutes_left([], []) is None  # nothing has run: nothing to scale by


def test_a_callback_pickled_by_an_earlier_version_still_reports() -> None:
    """Tune restores callbacks from the run folder: one pickled before `planned` existed
    counts epochs alike, as it did then."""
    old = Progress(_planned(), concurrency=2, metric="val/acc", mode="max")
    del old.planned
    restored = pickle.loads(pickle.dumps(old))
    trials = [_trial({"variant": "cnn", "seed": s}, 80, 2, 96.0) for s in (0, 1)]
    assert restored.minutes_left(trials, [None, None]) == pytest.approx(
        (2 * 78 + 7 * 80) * 48.0 / 2 / 60)
