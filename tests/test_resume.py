"""Interruption and failure: kill the driver and Ray, kill a Train worker, a trial that fails.

Slow (each runs a sweep or two through Ray): `pytest -m slow`.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from .conftest import history_by_config, run_cli

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


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and everything it started (its Ray instance too): a machine crash."""
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


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


def _checkpoint_mtimes(storage: Path) -> dict[str, float]:
    return {str(p.relative_to(storage)): p.stat().st_mtime
            for p in storage.glob("*/_train/*/epoch_*/state.pt")}


def test_resume_after_driver_and_ray_were_killed(smoke_run: dict, tmp_path: Path) -> None:
    args = ["batch_epoch", "--smoke", "--results", str(tmp_path / "results"), "--storage",
            str(tmp_path / "runs"), "--cache", str(smoke_run["base"] / "cache")]
    proc = _start(args, tmp_path)
    lines = _read_until(proc, "epoch 1/2")  # a 2-epoch trial is halfway
    _kill_tree(proc.pid)
    # What Tune had seen when the machine "crashed": trials it saw finish, and the epoch whose
    # report we just read. Those must not be trained again. (An epoch in flight at the kill may
    # be: its checkpoint can be on disk before Ray registered it; it is then redone, with the
    # same numbers.)
    seen = [line.split("]", 1)[1].split()[:3] for line in lines if line.startswith("[tune")]
    kept = {f"_train/{tid}/" for tid, what, *_ in seen if what in ("completed", "stopped")}
    halfway = lines[-1].split("]", 1)[1].split()[0]
    kept.add(f"_train/{halfway}/epoch_0001/")
    before = {p: m for p, m in _checkpoint_mtimes(tmp_path / "runs").items()
              if any(k in p for k in kept)}
    assert before, "".join(lines)

    again = run_cli(args, cwd=tmp_path)  # without --resume: refuses, names the way out
    assert again.returncode == 2 and "--resume" in again.stderr

    resumed = run_cli([*args, "--resume"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = _checkpoint_mtimes(tmp_path / "runs")
    for path, mtime in before.items():
        if path in after:  # (num_to_keep may have pruned it; never rewritten)
            assert after[path] == mtime, path
    trials = _rows(tmp_path / "results" / "batch_epoch-smoke" / "trials.csv")
    assert len(trials) == 4 and all(t["status"] != "error" for t in trials)
    # And the results equal those of the uninterrupted run.
    reference = history_by_config(smoke_run["out"] / "history.csv")
    got = history_by_config(tmp_path / "results" / "batch_epoch-smoke" / "history.csv")
    common = reference.keys() & got.keys()
    assert len(common) >= 4
    for key in common:
        assert got[key] == reference[key], key


def _one_trial_grid(tmp_path: Path) -> Path:
    """One 2-epoch trial at the study's full resolution: epochs of seconds, time to kill one."""
    g = tmp_path / "slowtrial.yaml"
    g.write_text("description: one slow trial\nbase: {model: cnn1, epochs: 2, batch_size: 8}\n"
                 "grid: {lr: [0.0004]}\n")
    return g


def test_killed_train_worker_retries_from_its_checkpoint(tmp_path: Path,
                                                         smoke_run: dict) -> None:
    grid = _one_trial_grid(tmp_path)
    common = ["--smoke", "--preset", "study", "--cache", str(smoke_run["base"] / "cache")]
    ref = run_cli([str(grid), *common, "--results", str(tmp_path / "ref"),
                   "--storage", str(tmp_path / "ref_runs")], cwd=tmp_path)
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]

    proc = _start([str(grid), *common, "--results", str(tmp_path / "res"),
                   "--storage", str(tmp_path / "runs")], tmp_path)
    _read_until(proc, "epoch 1/2")
    # This sweep's own worker only (its Ray instance descends from it): another sweep on the
    # machine is not this test's to kill.
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
               if "RayTrainWorker" in " ".join(p.cmdline())]
    assert workers, "no Train worker process found"
    for w in workers:
        w.send_signal(signal.SIGKILL)
    out = _finish(proc, 900)
    assert proc.returncode == 0, out[-4000:]
    trials = _rows(tmp_path / "res" / "slowtrial-smoke" / "trials.csv")
    assert [(t["status"], t["epoch"]) for t in trials] == [("completed", "2")]
    # Epoch 1 was not redone (its checkpoint predates the kill) and the numbers match a run
    # that was never interrupted.
    assert history_by_config(tmp_path / "res" / "slowtrial-smoke" / "history.csv") == \
        history_by_config(tmp_path / "ref" / "slowtrial-smoke" / "history.csv")


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path: Path,
                                                           smoke_run: dict) -> None:
    # 110 250 x 10^6 weights: ~440 GB, a config that cannot fit in memory.
    out = _run_grid_text(tmp_path, smoke_run["base"] / "cache", "oom",
                         "description: one config runs out of memory\n"
                         "base: {model: mlp, features: waveform, epochs: 1}\n"
                         "grid: {hidden: [[16], [1000000]]}\n", "--smoke")
    trials = {t["hidden"]: t for t in _rows(out / "trials.csv")}
    assert trials["[16]"]["status"] == "completed"
    assert trials["[1000000]"]["status"] == "error"
    assert trials["[1000000]"]["error"]
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
    for key in got.keys() & reference.keys():
        assert got[key] == reference[key], key


def test_checkpoints_keep_the_best_and_the_latest_epoch_only(tmp_path: Path,
                                                             smoke_run: dict) -> None:
    out = _run_grid_text(tmp_path, smoke_run["base"] / "cache", "fourepochs",
                         "description: one fast 4-epoch trial\n"
                         "base: {model: mlp, features: waveform, hidden: [16], epochs: 4}\n"
                         "grid: {lr: [0.001]}\n")
    history = _rows(out / "history.csv")
    assert [h["epoch"] for h in history] == ["1", "2", "3", "4"]
    best_epoch = max(history, key=lambda h: (float(h["val/acc"]), -int(h["epoch"])))["epoch"]
    kept = sorted(p.name for p in (tmp_path / "s" / "fourepochs" / "_train").glob("*/epoch_*"))
    assert kept == sorted({f"epoch_{int(best_epoch):04d}", "epoch_0004"})
    best = json.loads((out / "best.json").read_text())
    assert best["epoch"] == int(best_epoch)
