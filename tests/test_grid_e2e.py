"""The batch_epoch sweep end to end through Ray (Tune + Train + Data), shrunk by --smoke."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from raygenre.config import load_grid
from raygenre.data import Prepared
from raygenre.report import evaluate


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "raygenre.grid", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("e2e")
    # From an unrelated working directory: grid names must resolve anyway.
    args = ["batch_epoch", "--smoke", "--results", str(base / "results"), "--storage",
            str(base / "runs"), "--cache", str(base / "cache")]
    proc = _run(args, cwd=base)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"base": base, "args": args, "proc": proc,
            "out": base / "results" / "batch_epoch-smoke"}


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_smoke_writes_every_result_file(smoke_run: dict) -> None:
    out = smoke_run["out"]
    for name in ("trials.csv", "history.csv", "summary.md", "best.json", "data_report.csv",
                 "heatmap_val_acc.png", "curves_best_worst.png", "val_acc_by_trial.png",
                 "confusion_test.png"):
        assert (out / name).stat().st_size > 0, name
    trials = _rows(out / "trials.csv")
    grid = load_grid("batch_epoch").smoke()
    assert len(trials) == grid.n_trials
    assert {"trial_id", "status", "batch_size", "epochs", "epoch", "val/acc", "val/loss",
            "train/loss", "train/acc", "best/val/acc", "wall_s"} <= set(trials[0])
    assert {(int(t["batch_size"]), int(t["epochs"])) for t in trials} == {
        (b, e) for b in grid.axes["batch_size"] for e in grid.axes["epochs"]}
    for t in trials:
        assert t["status"] in ("completed", "stopped_early"), t
        assert 0.0 <= float(t["val/acc"]) <= 1.0
        assert float(t["best/val/acc"]) >= float(t["val/acc"])
    history = _rows(out / "history.csv")
    for t in trials:
        epochs = [int(h["epoch"]) for h in history if h["trial_id"] == t["trial_id"]]
        assert epochs == list(range(1, int(t["epoch"]) + 1))
    log = smoke_run["proc"].stdout
    assert "dashboard: http://127.0.0.1:" in log
    assert "preset 'cpu'" in log and "| **all** |" in log


def test_smoke_training_loss_goes_down(smoke_run: dict) -> None:
    history = _rows(smoke_run["out"] / "history.csv")
    by_trial: dict[str, list[float]] = {}
    for h in history:
        by_trial.setdefault(h["trial_id"], []).append(float(h["train/loss"]))
    longer = [losses for losses in by_trial.values() if len(losses) >= 2]
    assert longer, "no trial ran two epochs"
    for losses in longer:
        assert losses[-1] < losses[0], losses


def test_best_json_agrees_with_a_direct_evaluation(smoke_run: dict) -> None:
    out = smoke_run["out"]
    best = json.loads((out / "best.json").read_text())
    assert {"grid", "trial_id", "config", "val/acc", "test/acc", "test/track_acc"} <= set(best)
    assert best["grid"] == "batch_epoch"
    trials = {t["trial_id"]: t for t in _rows(out / "trials.csv")}
    assert abs(float(trials[best["trial_id"]]["best/val/acc"]) - best["val/acc"]) < 1e-4
    ckpt = Path(best["checkpoint"])
    prepared_dir = next((smoke_run["base"] / "cache" / "prepared").iterdir())
    meta = json.loads((prepared_dir / "meta.json").read_text())
    prepared = Prepared(prepared_dir, tuple(meta["genres"]), meta["segment_samples"],
                        meta["counts"], True)
    direct = evaluate(ckpt, prepared)
    assert abs(direct["test/acc"] - best["test/acc"]) < 1e-6
    assert abs(direct["test/track_acc"] - best["test/track_acc"]) < 1e-6
    summary = (out / "summary.md").read_text()
    assert f"{best['test/acc']:.4f}" in summary and "★" in summary


def test_existing_run_is_not_overwritten_without_resume(smoke_run: dict) -> None:
    proc = _run(smoke_run["args"], cwd=smoke_run["base"])
    assert proc.returncode == 2
    assert "already exists" in proc.stderr and "--resume" in proc.stderr
    assert (smoke_run["out"] / "trials.csv").exists()
