"""The engine end to end on a small data set: Tune's own checkpoints follow the grid's metric,
and a cell read from a shared trial equals the same cell trained alone."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from ray.tune import ExperimentAnalysis

from raygenre.training.checkpoints import STATE_FILE, read_meta

from .conftest import run_cli


def _sweep(tmp_path: Path, data: Path, name: str, text: str) -> Path:
    (tmp_path / f"{name}.yaml").write_text(text)
    proc = run_cli([str(tmp_path / f"{name}.yaml"), "--data", str(data), "--results",
                    str(tmp_path / "r"), "--storage", str(tmp_path / "s"), "--cache",
                    str(tmp_path / "c")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp_path / "r" / name


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


MLP = ("base: {model: mlp, features: waveform, hidden: [16], dropout: 0.2}\n"
       "asha: false\n")


def test_the_tested_checkpoint_is_tunes_best_by_the_grids_metric(tmp_path: Path,
                                                                 builtin_small: Path) -> None:
    """metric: val/loss under early stopping (`judge_epoch: best`, the rule that needs Tune to
    keep an earlier epoch's checkpoint). The best cell is the lowest val/loss at any epoch, it
    is tested at that epoch, and Ray's own reader names the same checkpoint (Tune kept it by
    val/loss)."""
    out = _sweep(tmp_path, builtin_small, "byloss", "description: lowest val/loss\n"
                 "metric: val/loss\njudge_epoch: best\n" + MLP
                 + "grid: {lr: [0.0003, 0.01], epochs: [4]}\n")
    best = json.loads((out / "best.json").read_text())
    history = _rows(out / "history.csv")
    lowest = min(float(h["val/loss"]) for h in history)
    assert best["metric"] == "val/loss" and best["val/loss"] == lowest
    mine = [h for h in history if h["cell_id"] == best["cell_id"]]
    at = max(int(h["epoch"]) for h in mine if float(h["val/loss"]) == lowest)
    assert best["epoch"] == at
    analysis = ExperimentAnalysis(str(tmp_path / "s" / "byloss"))
    (trial,) = [t for t in analysis.trials if t.trial_id == best["trial_id"]]
    theirs = analysis.get_best_checkpoint(trial, metric="val/loss", mode="min")
    assert theirs is not None and Path(theirs.path) == Path(best["checkpoint"])
    # By val/acc the same reader would pick another epoch's checkpoint if Tune had kept one:
    # it kept the best by the grid's metric and the latest (epoch 4), no more (one folder
    # when they are the same).
    kept = {read_meta(p)["metrics"]["epoch"]: p
            for p in (tmp_path / "s" / "byloss" / best["trial_id"]).glob("checkp*")}
    assert set(kept) == {best["epoch"], 4}
    assert kept[best["epoch"]] == Path(best["checkpoint"])


def _weights(folder: Path) -> dict:
    return torch.load(folder / STATE_FILE, weights_only=True)["model"]


def test_a_member_of_a_shared_trial_equals_its_own_trial_bit_for_bit(
        tmp_path: Path, builtin_small: Path) -> None:
    grid = MLP + "grid: {batch_size: [8, 16], epochs: [1, 2, 3]}\n"
    shared = _sweep(tmp_path, builtin_small, "shared", "description: d\n" + grid)
    alone = _sweep(tmp_path, builtin_small, "alone",
                   "description: d\nshare_prefixes: false\n" + grid)
    rows = {(c["batch_size"], c["epochs"]): c for c in _rows(shared / "cells.csv")}
    solo = {(c["batch_size"], c["epochs"]): c for c in _rows(alone / "cells.csv")}
    assert len(rows) == len(solo) == 6
    assert len({c["trial_id"] for c in rows.values()}) == 2  # 2 trials stood for 6 cells
    assert len({c["trial_id"] for c in solo.values()}) == 6
    # 6 trials on 2 slots: later trials reused an earlier trial's process (torch imported once
    # per slot), and still gave the numbers of a fresh one (the shared sweep's 2 trials had
    # their own).
    pids = {json.loads((d / "result.json").read_text().splitlines()[0])["pid"]
            for d in (tmp_path / "s" / "alone").glob("*_0000*")}
    assert len(pids) < 6
    for key, c in rows.items():
        for col in ("status", "epoch", "val/acc", "val/loss", "train/loss", "train/acc",
                    "best/val/acc", "best_epoch"):
            assert c[col] == solo[key][col], (key, col)
    hist = {(h["batch_size"], h["epochs"], h["epoch"]): h for h in _rows(shared / "history.csv")}
    hist_solo = {(h["batch_size"], h["epochs"], h["epoch"]): h
                 for h in _rows(alone / "history.csv")}
    assert {k: {m: v for m, v in h.items() if m != "cell_id"} for k, h in hist.items()} == \
        {k: {m: v for m, v in h.items() if m != "cell_id"} for k, h in hist_solo.items()}
    # The checkpoint each member is tested at (cells.csv) holds the weights its own trial
    # was tested at, which is what Ray's reader names as that trial's best.
    a_alone = ExperimentAnalysis(str(tmp_path / "s" / "alone"))
    for key, c in rows.items():
        longest = max(int(u["epochs"]) for u in rows.values() if u["trial_id"] == c["trial_id"])
        kept_for_it = tmp_path / "s" / "shared" / "members" / c["trial_id"]
        assert (Path(c["checkpoint"]).parent == kept_for_it) == (int(c["epochs"]) < longest)
        (own,) = [x for x in a_alone.trials if x.trial_id == solo[key]["trial_id"]]
        theirs = Path(a_alone.get_best_checkpoint(own, "val/acc", "max").path)
        assert Path(solo[key]["checkpoint"]) == theirs
        a, b = _weights(Path(c["checkpoint"])), _weights(theirs)
        assert all(torch.equal(a[k], b[k]) for k in a), key
    b1, b2 = (json.loads((d / "best.json").read_text()) for d in (shared, alone))
    assert (b1["swept"], b1["test/acc"], b1["test/track_acc"]) == \
        (b2["swept"], b2["test/acc"], b2["test/track_acc"])
