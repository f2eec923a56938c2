"""ASHA across a crash, with real Tune: the driver and its Ray are killed after ASHA stopped a
trial, the sweep is resumed, and the stopped trial stays stopped and the results are those of a
sweep never interrupted.

One trial at a time (`--max-concurrent 1`): ASHA's decisions depend on the order in which trials
reach a rung (the first one there is never cut), and with parallel trials that order is the
machine's timing, so not even two uninterrupted sweeps would stop the same trials. In grid order
both sweeps meet the rungs in the same order, and the comparison can be exact.

Slow (each runs a sweep or two through Ray): `pytest -m slow`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from raygenre.paths import ASHA_STATE_NAME
from raygenre.sweep.asha import stopped_trials

from .conftest import history_by_config, kill_tree, run_cli
from .test_resume import _read_until, _rows, _start

pytestmark = pytest.mark.slow

NAME = "ashagrid"
# Eight 2-epoch trials, one rung (epoch 1), half go on from it (reduction factor 2): the first
# trial passes it uncontested, and trials that fall below the median of the trials before them
# stop.
GRID = """\
description: eight short MLP trials under ASHA
base: {model: mlp, features: waveform, hidden: [16], epochs: 2}
asha: {reduction_factor: 2}
grid:
  lr: [0.003, 0.00001]
  hidden: [[32], [16]]
  dropout: [0.0, 0.3]
"""
SWEPT = ("lr", "hidden", "dropout")
EPOCHS = 2  # every trial's, under --smoke
# cells.csv columns that name this sweep's cells, trials, folders, machine or clock, not its
# numbers.
NOT_NUMBERS = {"cell_id", "trial_id", "checkpoint", "wall_s", "train_s", "node"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same grid, same seed, never interrupted."""
    base = tmp_path_factory.mktemp("asha")
    (base / f"{NAME}.yaml").write_text(GRID)
    common = [str(base / f"{NAME}.yaml"), "--smoke", "--max-concurrent", "1", "--cache",
              str(base / "cache")]
    proc = run_cli([*common, "--results", str(base / "ref"), "--storage",
                    str(base / "ref_runs")], cwd=base)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = base / "ref" / f"{NAME}-smoke"
    cells = _rows(out / "cells.csv")
    assert len(cells) == 8
    # Else this sweep would not show ASHA's resume at all.
    assert sum(c["status"] == "stopped_early" for c in cells) >= 2, cells
    return {"base": base, "common": common, "out": out}


def _tune_statuses(experiment: Path) -> dict[str, str] | None:
    """Each trial's status in the experiment state Tune last wrote to the run folder (what a
    restore reads); None while that file is missing or being replaced."""
    try:
        [state] = experiment.glob("experiment_state-*.json")
        data = json.loads(state.read_text())
        return {json.loads(t)["trial_id"]: json.loads(t)["status"]
                for t, _ in data["trial_data"]}
    except (ValueError, OSError):
        return None


def _freeze_after_asha_stop(proc: subprocess.Popen, experiment: Path,
                            tune_recorded: bool) -> tuple[str, int]:
    """Freeze the driver (SIGSTOP) at a progress line where a trial ASHA stopped before its last
    epoch is, in the experiment state on disk, TERMINATED (`tune_recorded`) or still live:
    the two moments a crash can come. Returns (trial id, the epoch ASHA stopped it at).

    ASHA decides in the result's own step and writes its decision before any callback prints
    that epoch; Tune records the stop in a later step, once the epoch's checkpoint is saved.
    The driver is frozen on each line, before anything is read, so the state on disk cannot
    move while it is judged; if the moment is not there, the sweep goes on to the next line.
    """
    last_epoch: dict[str, int] = {}
    while True:
        line = _read_until(proc, "[tune ", timeout=300)[-1]
        os.kill(proc.pid, signal.SIGSTOP)
        tid, what, *rest = line.split("]", 1)[1].split()
        if what == "epoch":
            last_epoch[tid] = int(rest[0].split("/")[0])
        statuses = _tune_statuses(experiment)
        for t in stopped_trials(str(experiment / ASHA_STATE_NAME)) if statuses else ():
            early = 0 < last_epoch.get(t, 0) < EPOCHS
            # Not recorded: live, or not there at all (Tune created the trial after its last
            # save; a restore creates it again, with the same id, from the searcher's state).
            if early and (statuses.get(t) == "TERMINATED") == tune_recorded:
                return t, last_epoch[t]
        os.kill(proc.pid, signal.SIGCONT)


def _checkpoint_files(trial_dir: Path) -> dict[str, float]:
    return {str(p.relative_to(trial_dir)): p.stat().st_mtime
            for p in trial_dir.glob("checkpoint_*/*")}


def _cells_by_config(path: Path) -> dict[tuple, dict[str, str]]:
    rows = _rows(path)
    out = {tuple(r[k] for k in SWEPT): {k: v for k, v in r.items() if k not in NOT_NUMBERS}
           for r in rows}
    assert len(out) == len(rows), rows
    return out


@pytest.mark.parametrize("tune_recorded", [True, False], ids=["stop-saved", "stop-not-saved"])
def test_resume_keeps_asha_stops_and_gives_the_uninterrupted_results(
        reference: dict, tune_recorded: bool, tmp_path: Path) -> None:
    """Killed (driver and Ray, SIGKILL) once ASHA has stopped a trial: either after Tune saved
    that trial as terminated (a restore leaves it alone; the rungs must still be ASHA's, or
    the trials after it are judged against an empty rung), or before (Tune restores it as live
    and it reports its stop epoch again: ASHA must stop it again, not let it through a rung it
    is already in). Then `--resume`."""
    args = [*reference["common"], "--results", str(tmp_path / "res"), "--storage",
            str(tmp_path / "runs")]
    experiment = tmp_path / "runs" / f"{NAME}-smoke"
    proc = _start(args, tmp_path)
    try:
        stopped, at = _freeze_after_asha_stop(proc, experiment, tune_recorded)
    finally:
        kill_tree(proc.pid)
    # A frozen process dies on SIGKILL too; nothing wrote the run folder after the freeze.
    assert (_tune_statuses(experiment).get(stopped) == "TERMINATED") == tune_recorded
    before = _checkpoint_files(experiment / stopped)
    assert before, f"{stopped} has no checkpoint on disk"

    resumed = run_cli([*args, "--resume"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "[grid] resuming" in resumed.stdout
    # The stopped trial does not train again. Left alone when Tune had saved its stop; else
    # restored from its latest checkpoint Tune had registered, it redoes at most the epoch in
    # flight at the crash (the stop epoch, the same numbers) and is stopped there again.
    lines = [line.split("]", 1)[1].split(None, 1)[1].split("|")[0].strip()
             for line in resumed.stdout.splitlines()
             if line.startswith("[tune ") and f" {stopped} " in line]
    if tune_recorded:
        assert lines == [], lines
        assert _checkpoint_files(experiment / stopped) == before
    else:
        assert all(not line.startswith("epoch") or line.startswith(f"epoch {at}/")
                   for line in lines), lines
        assert lines[-1] == "stopped by ASHA", lines
        after = _checkpoint_files(experiment / stopped)
        assert after.keys() == before.keys(), (before, after)
    out = tmp_path / "res" / f"{NAME}-smoke"
    # Every stop, before and after the resume, is still on record once the sweep is done (Tune
    # once put the state file back as it was at the resume: the sweep then said it was
    # interrupted, and a second crash would have judged trials against stale rungs). Each cell
    # is a trial of its own here, so its cell id is its trial's id.
    early = {c["trial_id"] for c in _rows(out / "cells.csv") if c["status"] == "stopped_early"}
    assert stopped in early and early <= stopped_trials(str(experiment / ASHA_STATE_NAME))
    history = [h for h in _rows(out / "history.csv") if h["cell_id"] == stopped]
    assert [int(h["epoch"]) for h in history] == list(range(1, at + 1)), history
    # And the results are the uninterrupted sweep's, row for row: each cell's status, epochs,
    # best epoch and metrics (cells.csv), and each epoch's numbers (history.csv).
    got, want = (_cells_by_config(o / "cells.csv") for o in (out, reference["out"]))
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == want[key], key
    got_h, want_h = (history_by_config(o / "history.csv") for o in (out, reference["out"]))
    assert got_h.keys() == want_h.keys(), (sorted(got_h.keys() - want_h.keys()),
                                           sorted(want_h.keys() - got_h.keys()))
    for key in want_h:
        assert got_h[key] == want_h[key], key
