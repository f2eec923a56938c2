"""Interruption and failure: kill the driver and Ray, kill the training process, a failing trial.

Slow (each runs a sweep or two through Ray): `pytest -m slow`.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from raygenre.training.scratch import scratch_prefix

from .conftest import history_by_config, kill_tree, run_cli
from .test_grid_e2e import assert_every_row_equal

pytestmark = pytest.mark.slow


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "raygenre.grid", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _read_until(proc: subprocess.Popen, needle: str, timeout: float = 600) -> list[str]:
    """The child's output lines up to the first holding `needle`. A reader thread feeds a
    queue, so a child that hangs silently fails the test at `timeout` instead of hanging it."""
    q: queue.Queue = getattr(proc, "_lines", None) or queue.Queue()
    if not hasattr(proc, "_lines"):
        proc._lines = q  # type: ignore[attr-defined]

        def pump() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                q.put(line)
            q.put(None)

        threading.Thread(target=pump, daemon=True).start()
    lines, deadline = [], time.time() + timeout
    while True:
        try:
            line = q.get(timeout=max(0.1, deadline - time.time()))
        except queue.Empty:
            raise AssertionError(f"no {needle!r} after {timeout:.0f} s:\n"
                                 + "".join(lines[-50:])) from None
        if line is None:
            raise AssertionError(f"run ended before {needle!r}:\n" + "".join(lines[-80:]))
        lines.append(line)
        if needle in line:
            return lines


def _finish(proc: subprocess.Popen, timeout: float) -> str:
    """The rest of the child's output once it exits (after `_read_until` took the start)."""
    lines: list[str] = []
    q = getattr(proc, "_lines", None)
    deadline = time.time() + timeout
    while q is not None:
        try:
            line = q.get(timeout=max(0.1, deadline - time.time()))
        except queue.Empty:
            proc.kill()
            raise AssertionError(f"still running after {timeout:.0f} s:\n"
                                 + "".join(lines[-50:])) from None
        if line is None:
            break
        lines.append(line)
    proc.wait(timeout=max(1, deadline - time.time()))
    return "".join(lines)


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _run_grid_text(tmp_path: Path, cache: Path, name: str, text: str,
                   *extra: str) -> Path:
    """Write a grid file, run it to completion, return its results folder."""
    grid = tmp_path / f"{name}.yaml"
    grid.write_text(text)
    proc = run_cli([str(grid), *extra, "--cache", str(cache), "--results", str(tmp_path / "r"),
                    "--storage", str(tmp_path / "s")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp_path / "r" / (name + ("-smoke" if "--smoke" in extra else ""))


def _checkpoint_mtimes(storage: Path) -> dict[tuple[str, int], float]:
    """(trial id, epoch) -> mtime of each checkpoint's state file: Tune's own
    (<run>/<trial>/checkpoint_N/) and a data-parallel trial's Train ones
    (<run>/_train/<trial>/epoch_N/); not the copies kept for shorter members."""
    out = {}
    for state in storage.rglob("state.pt"):
        d = state.parent
        if "members" in d.parts:
            continue
        epoch = json.loads((d / "meta.json").read_text())["metrics"]["epoch"]
        out[(d.parent.name, epoch)] = state.stat().st_mtime
    return out


RUNNERS = {"one-process": [], "data-parallel": ["--workers-per-trial", "2"]}


@pytest.fixture(scope="module")
def dp_run(smoke_run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted `batch_epoch --smoke` with two Ray Train workers per trial (DDP over
    gloo): the reference for the data-parallel runner."""
    base = tmp_path_factory.mktemp("dp")
    args = ["batch_epoch", "--smoke", *RUNNERS["data-parallel"], "--results",
            str(base / "results"), "--storage", str(base / "runs"), "--cache",
            str(smoke_run["base"] / "cache")]
    proc = run_cli(args, cwd=base)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 Ray Train workers, DDP" in proc.stdout
    return {"base": base, "out": base / "results" / "batch_epoch-smoke"}


def _reference(runner: str, smoke_run: dict, dp_run: dict | None) -> Path:
    return (smoke_run if runner == "one-process" else dp_run)["out"] / "history.csv"


def test_data_parallel_runner_same_seed_same_numbers(dp_run: dict, smoke_run: dict,
                                                     tmp_path: Path) -> None:
    """Every results file, and a second run with the same seed reporting the same numbers for
    every cell and epoch. (Two workers shard the data: the numbers are not the one-process
    runner's.)"""
    out = dp_run["out"]
    for name in ("cells.csv", "history.csv", "summary.md", "best.json", "heatmap_val_acc.png"):
        assert (out / name).stat().st_size > 0, name
    assert (dp_run["base"] / "runs" / "batch_epoch-smoke" / "_train").is_dir()
    again = _run_grid_text(tmp_path, smoke_run["base"] / "cache", "batch_epoch",
                           (Path(__file__).parent.parent / "grids" / "batch_epoch.yaml")
                           .read_text(), "--smoke", *RUNNERS["data-parallel"])
    first = history_by_config(out / "history.csv")
    second = history_by_config(again / "history.csv")
    assert_every_row_equal(second, first)
    assert first != history_by_config(smoke_run["out"] / "history.csv")


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_resume_after_driver_and_ray_were_killed(runner: str, smoke_run: dict,
                                                 request: pytest.FixtureRequest,
                                                 tmp_path: Path) -> None:
    dp = request.getfixturevalue("dp_run") if runner == "data-parallel" else None
    args = ["batch_epoch", "--smoke", *RUNNERS[runner], "--results",
            str(tmp_path / "results"), "--storage", str(tmp_path / "runs"), "--cache",
            str(smoke_run["base"] / "cache")]
    proc = _start(args, tmp_path)
    lines = _read_until(proc, "epoch 1/2")  # a 2-epoch trial is halfway
    kill_tree(proc.pid)
    # What Tune had seen when the machine "crashed": trials it saw finish, and the epoch whose
    # report we just read. Those must not be trained again. (An epoch in flight at the kill may
    # be: its checkpoint can be on disk before Ray registered it; it is then redone, with the
    # same numbers.)
    seen = [line.split("]", 1)[1].split()[:3] for line in lines if line.startswith("[tune")]
    finished = {tid for tid, what, *_ in seen if what in ("completed", "stopped")}
    halfway = lines[-1].split("]", 1)[1].split()[0]
    before = {k: m for k, m in _checkpoint_mtimes(tmp_path / "runs").items()
              if k[0] in finished or k == (halfway, 1)}
    assert (halfway, 1) in before, "".join(lines)

    again = run_cli(args, cwd=tmp_path)  # without --resume: refuses, names the way out
    assert again.returncode == 2 and "--resume" in again.stderr
    other = run_cli([*args, "--resume", "--cpus-per-trial", "0.5"], cwd=tmp_path)
    assert other.returncode == 2 and "cpus_per_worker" in other.stderr  # other arithmetic

    resumed = run_cli([*args, "--resume"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = _checkpoint_mtimes(tmp_path / "runs")
    for key, mtime in before.items():
        if key in after:  # (retention may have pruned it; never rewritten)
            assert after[key] == mtime, key
    cells = _rows(tmp_path / "results" / "batch_epoch-smoke" / "cells.csv")
    assert len(cells) == 4 and all(c["status"] != "error" for c in cells)
    # And the results equal those of the uninterrupted run.
    reference = history_by_config(_reference(runner, smoke_run, dp))
    got = history_by_config(tmp_path / "results" / "batch_epoch-smoke" / "history.csv")
    assert_every_row_equal(got, reference)


def _ledger(cache: Path) -> list[str]:
    return [json.loads(f.read_text())["reader"]
            for f in (cache / "test_ledger").glob("*/reads/*.json")]


def _aggregates(out: Path) -> tuple[list[dict], dict]:
    """configs.csv without cell ids (Tune names trials anew in every experiment), and
    best.json's verdict."""
    configs = [{k: v for k, v in c.items() if k != "cells"} for c in _rows(out / "configs.csv")]
    best = json.loads((out / "best.json").read_text())
    keep = ("val/acc", "test/acc", "test/track_acc", "interval", "test/acc interval",
            "test/track_acc interval", "tied_with", "ties", "replicates", "carry")
    return configs, {k: best[k] for k in keep}


def test_replicates_resumed_give_the_aggregates_of_an_uninterrupted_sweep(
        smoke_run: dict, tmp_path: Path) -> None:
    """Three seeds per configuration, killed halfway (driver and Ray), resumed: the same
    per-configuration table and verdict as a sweep never interrupted; the test split read
    once per chosen seed by each sweep that finished, none by the killed one."""
    cache = smoke_run["base"] / "cache"
    common = ["batch_epoch", "--smoke", "--replicates", "3", "--cache", str(cache)]
    reads = len(_ledger(cache))
    ref = run_cli([*common, "--results", str(tmp_path / "ref"), "--storage",
                   str(tmp_path / "ref_runs")], cwd=tmp_path)
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    assert len(_ledger(cache)) == reads + 3
    args = [*common, "--results", str(tmp_path / "res"), "--storage", str(tmp_path / "runs")]
    proc = _start(args, tmp_path)
    _read_until(proc, "epoch 1/2")
    kill_tree(proc.pid)
    assert len(_ledger(cache)) == reads + 3
    resumed = run_cli([*args, "--resume"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert len(_ledger(cache)) == reads + 6
    got = _aggregates(tmp_path / "res" / "batch_epoch-smoke")
    want = _aggregates(tmp_path / "ref" / "batch_epoch-smoke")
    assert len(got[0]) == 4 and all(c["replicates"] == "3" for c in got[0])
    assert got == want
    summary = (tmp_path / "res" / "batch_epoch-smoke" / "summary.md").read_text()
    assert "## Configurations over seeds" in summary


def _one_trial_grid(tmp_path: Path) -> Path:
    """One 2-epoch trial at the study's full resolution: epochs of seconds, time to kill one."""
    g = tmp_path / "slowtrial.yaml"
    g.write_text("description: one slow trial\nbase: {model: cnn1, epochs: 2, batch_size: 8}\n"
                 "grid: {lr: [0.0004]}\n")
    return g


# The process that runs the loop: the Tune trial itself, or a Ray Train worker.
LOOP_PROCESS = {"one-process": "ImplicitFunc", "data-parallel": "RayTrainWorker"}


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_a_killed_trial_process_retries_from_its_checkpoint(runner: str, tmp_path: Path,
                                                            smoke_run: dict) -> None:
    grid = _one_trial_grid(tmp_path)
    common = ["--smoke", "--preset", "study", *RUNNERS[runner], "--cache",
              str(smoke_run["base"] / "cache")]
    ref = run_cli([str(grid), *common, "--results", str(tmp_path / "ref"),
                   "--storage", str(tmp_path / "ref_runs")], cwd=tmp_path)
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]

    proc = _start([str(grid), *common, "--results", str(tmp_path / "res"),
                   "--storage", str(tmp_path / "runs")], tmp_path)
    _read_until(proc, "epoch 1/2")
    # This sweep's own processes only (its Ray instance descends from it): another sweep on
    # the machine is not this test's to kill.
    victims = [p for p in psutil.Process(proc.pid).children(recursive=True)
               if LOOP_PROCESS[runner] in " ".join(p.cmdline())]
    assert victims, f"no {LOOP_PROCESS[runner]} process found"
    for p in victims:
        p.send_signal(signal.SIGKILL)
    out = _finish(proc, 900)
    assert proc.returncode == 0, out[-4000:]
    cells = _rows(tmp_path / "res" / "slowtrial-smoke" / "cells.csv")
    assert [(c["status"], c["epoch"]) for c in cells] == [("completed", "2")]
    # A victim killed while it held a checkpoint's scratch folder (~650 MB here) left it
    # behind; the retry's loop removed it.
    left = [d for p in victims
            for d in Path(tempfile.gettempdir()).glob(f"{scratch_prefix(p.pid)}*")]
    assert not left, left
    # The numbers match a run that was never interrupted.
    assert history_by_config(tmp_path / "res" / "slowtrial-smoke" / "history.csv") == \
        history_by_config(tmp_path / "ref" / "slowtrial-smoke" / "history.csv")
    # ~2.7 GB of study-resolution checkpoints: gone now, not at the end of the session.
    for runs in ("ref_runs", "runs"):
        shutil.rmtree(tmp_path / runs)


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path: Path,
                                                           smoke_run: dict) -> None:
    # 110 250 x 10^6 weights: ~440 GB, a config that cannot fit in memory.
    out = _run_grid_text(tmp_path, smoke_run["base"] / "cache", "oom",
                         "description: one config runs out of memory\n"
                         "base: {model: mlp, features: waveform, epochs: 1}\n"
                         "grid: {hidden: [[16], [1000000]]}\n", "--smoke")
    cells = {c["hidden"]: c for c in _rows(out / "cells.csv")}
    assert cells["[16]"]["status"] == "completed"
    assert cells["[1000000]"]["status"] == "error"
    assert cells["[1000000]"]["error"]
    summary = (out / "summary.md").read_text()
    assert "## Errors" in summary


def test_ctrl_c_stops_cleanly_and_resume_finishes(smoke_run: dict, tmp_path: Path) -> None:
    args = ["batch_epoch", "--smoke", "--results", str(tmp_path / "results"), "--storage",
            str(tmp_path / "runs"), "--cache", str(smoke_run["base"] / "cache")]
    proc = _start(args, tmp_path)
    _read_until(proc, "epoch 1/")
    proc.send_signal(signal.SIGINT)
    out = _finish(proc, 300)
    assert proc.returncode == 130, out[-3000:]
    assert "Resume with the same command plus --resume" in out
    assert not (tmp_path / "results" / "batch_epoch-smoke" / "summary.md").exists()
    resumed = run_cli([*args, "--resume"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    got = history_by_config(tmp_path / "results" / "batch_epoch-smoke" / "history.csv")
    reference = history_by_config(smoke_run["out"] / "history.csv")
    assert_every_row_equal(got, reference)
    # The sweep's wall is both commands', the one stopped by Ctrl-C included.
    summary = (tmp_path / "results" / "batch_epoch-smoke" / "summary.md").read_text()
    assert "over 2 commands (this one" in summary and "training share 0." in summary


def test_checkpoints_keep_the_best_and_the_latest_epoch_only(tmp_path: Path,
                                                             smoke_run: dict) -> None:
    out = _run_grid_text(tmp_path, smoke_run["base"] / "cache", "fourepochs",
                         "description: one fast 4-epoch trial\n"
                         "base: {model: mlp, features: waveform, hidden: [16], epochs: 4}\n"
                         "grid: {lr: [0.001]}\n")
    history = _rows(out / "history.csv")
    assert [h["epoch"] for h in history] == ["1", "2", "3", "4"]
    # The best by val/acc, the latest on a tie (as Tune keeps them).
    best_epoch = max(history, key=lambda h: (float(h["val/acc"]), int(h["epoch"])))["epoch"]
    kept = sorted(e for (_, e) in _checkpoint_mtimes(tmp_path / "s"))
    assert kept == sorted({int(best_epoch), 4})
    best = json.loads((out / "best.json").read_text())
    assert best["epoch"] == 4  # tested at its last epoch (judge_epoch's default)


def test_every_trial_failing_is_one_clear_error(tmp_path: Path, smoke_run: dict) -> None:
    grid = tmp_path / "allfail.yaml"
    grid.write_text("description: every config runs out of memory\n"
                    "base: {model: mlp, features: waveform, epochs: 1}\n"
                    "grid: {hidden: [[1000000], [2000000]]}\n")
    proc = run_cli([str(grid), "--smoke", "--cache", str(smoke_run["base"] / "cache"),
                    "--results", str(tmp_path / "r"), "--storage", str(tmp_path / "s")],
                   cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: every trial failed before reporting val/acc; errors in "
                      f"{tmp_path / 'r' / 'allfail-smoke' / 'cells.csv'}"]
    assert "Traceback" not in proc.stderr
    cells = _rows(tmp_path / "r" / "allfail-smoke" / "cells.csv")
    assert [c["status"] for c in cells] == ["error", "error"] and all(c["error"] for c in cells)
    # Their trial ids are Tune's, though neither reported anything (once read from folder
    # names), and each cell, alone in its trial, has its trial's id.
    assert all(re.fullmatch(r"[0-9a-f]{5}_0000[01]", c["trial_id"]) for c in cells), cells
    assert all(c["cell_id"] == c["trial_id"] for c in cells), cells
