"""The batch_epoch sweep end to end through Ray (Tune + Train + Data), shrunk by --smoke."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from raygenre.grid.file import load_grid

from .conftest import history_by_config, run_cli


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_smoke_writes_every_result_file(smoke_run: dict) -> None:
    out = smoke_run["out"]
    for name in ("cells.csv", "history.csv", "summary.md", "best.json", "data_report.csv",
                 "heatmap_val_acc.png", "curves_best_worst.png", "val_acc_by_cell.png",
                 "confusion_test.png"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "trials.csv").exists() and not (out / "val_acc_by_trial.png").exists()
    cells = _rows(out / "cells.csv")
    grid = load_grid("batch_epoch").smoke()
    assert len(cells) == grid.n_cells
    assert {"cell_id", "trial_id", "status", "batch_size", "epochs", "epoch", "val/acc",
            "val/loss", "train/loss", "train/acc", "best/val/acc", "wall_s"} <= set(cells[0])
    assert list(cells[0])[0] == "cell_id" and "run_id" not in cells[0]
    assert {(int(c["batch_size"]), int(c["epochs"])) for c in cells} == {
        (b, e) for b in grid.axes["batch_size"] for e in grid.axes["epochs"]}
    for c in cells:
        assert c["status"] in ("completed", "stopped_early"), c
        assert 0.0 <= float(c["val/acc"]) <= 1.0
        assert float(c["best/val/acc"]) >= float(c["val/acc"])
    history = _rows(out / "history.csv")
    for c in cells:
        epochs = [int(h["epoch"]) for h in history if h["cell_id"] == c["cell_id"]]
        assert epochs == list(range(1, int(c["epoch"]) + 1))
    index = (out.parent / "index.html").read_text()
    assert index.count('<img src="batch_epoch-smoke/') == 4 and "<th>batch_size</th>" in index
    log = smoke_run["proc"].stdout
    assert "dashboard: http://127.0.0.1:" in log
    assert "preset 'cpu'" in log and "| **all** |" in log


def test_smoke_says_how_sure_its_winner_is(smoke_run: dict) -> None:
    """Every cell's interval at its judged epoch in cells.csv, the winner's and its ties in
    best.json, the verdict in the console's last lines and summary.md, and the test read in
    the prepared set's ledger."""
    out = smoke_run["out"]
    cells = _rows(out / "cells.csv")
    for c in cells:  # judged at their last epoch (batch_epoch's judge_epoch)
        assert c["judged_at"] == "last epoch" and c["judged_epoch"] == c["epoch"]
        lo, hi = float(c["last/val/acc ci_lo"]), float(c["last/val/acc ci_hi"])
        assert lo <= float(c["last/val/acc"]) <= hi, c
        assert lo < hi  # a smoke split's one-track classes are resampled together
        assert float(c["judged val/acc"]) == float(c["last/val/acc"]) == float(c["val/acc"])
    assert abs(sum(float(c["p_best"]) for c in cells) - 1) < 1e-9
    best = json.loads((out / "best.json").read_text())
    iv = best["interval"]
    assert iv["low"] <= best["val/acc"] <= iv["high"] and "bootstrap over tracks" in iv["method"]
    est = best["winner_estimate"]
    assert est["low"] <= est["value"] <= est["high"] and est["among"] == len(cells)
    assert best["judge_epoch"] == "last" and 0 < best["p_best"] <= 1
    tied = {c["cell_id"] for c in cells if c["tied_with_best"] == "True"}
    untied = {c["cell_id"] for c in cells if c["tied_with_best"] == "False"}
    assert len(tied) + len(untied) == len(cells) - 1  # every cell but the winner judged
    assert len(best["tied_with"]) == len(tied)
    for c in cells:
        if c["cell_id"] in tied:
            assert float(c["gap_lo"]) <= 0.0 <= float(c["gap"])
        elif c["cell_id"] in untied:
            assert float(c["gap_lo"]) > 0.0
    lo, hi = best["test/acc interval"]
    assert lo <= best["test/acc"] <= hi
    log = smoke_run["proc"].stdout.splitlines()
    verdict = next(line for line in log if line.startswith("[results] best "))
    assert verdict == f"[results] {best['verdict']}"
    assert ("tied within noise: " in verdict) == bool(tied)
    summary = (out / "summary.md").read_text()
    assert best["verdict"] in summary and "this test split has been read" in summary
    # The read is in the ledger in the cache and beside the run folders, and copied into
    # best.json.
    for place in (smoke_run["base"] / "cache", smoke_run["base"] / "runs"):
        reads = sorted((json.loads(f.read_text()) for f in
                        (place / "test_ledger").glob("*/reads/*.json")), key=lambda e: e["id"])
        assert {"reader": f"batch_epoch-smoke: final evaluation of cell {best['cell_id']}",
                "checkpoint": best["checkpoint"]}.items() <= reads[0].items()
    assert best["test_ledger"]["entries"][0]["id"] == reads[0]["id"]


def test_smoke_training_loss_goes_down(smoke_run: dict) -> None:
    history = _rows(smoke_run["out"] / "history.csv")
    by_cell: dict[str, list[float]] = {}
    for h in history:
        by_cell.setdefault(h["cell_id"], []).append(float(h["train/loss"]))
    longer = [losses for losses in by_cell.values() if len(losses) >= 2]
    assert longer, "no cell ran two epochs"
    for losses in longer:
        assert losses[-1] < losses[0], losses


def test_best_json_agrees_with_an_independent_evaluation(smoke_run: dict) -> None:
    """best.json's test accuracy, recomputed without raygenre's report: the checkpoint found by
    Ray's own reader (or the member copy cells.csv names), the test split read with pyarrow,
    plain argmax and a plain majority vote."""
    import pyarrow as pa
    import torch
    from ray.tune import ExperimentAnalysis

    from raygenre.training.checkpoints import load_checkpoint

    out = smoke_run["out"]
    best = json.loads((out / "best.json").read_text())
    assert {"grid", "cell_id", "trial_id", "config", "val/acc", "test/acc",
            "test/track_acc"} <= set(best)
    assert best["grid"] == "batch_epoch"
    cells = {c["cell_id"]: c for c in _rows(out / "cells.csv")}
    row = cells[best["cell_id"]]
    assert row["trial_id"] == best["trial_id"]
    assert abs(float(row["last/val/acc"]) - best["val/acc"]) < 1e-9
    longest = max(int(c["epochs"]) for c in cells.values() if c["trial_id"] == row["trial_id"])
    if int(row["epochs"]) == longest:
        analysis = ExperimentAnalysis(str(smoke_run["base"] / "runs" / "batch_epoch-smoke"))
        (trial,) = [t for t in analysis.trials if t.trial_id == best["trial_id"]]
        ckpt = Path(analysis.get_last_checkpoint(trial).path)  # judged at its last epoch
    else:
        ckpt = Path(row["checkpoint"])
    assert ckpt == Path(best["checkpoint"])
    feats, model, meta = load_checkpoint(ckpt)
    assert meta["metrics"]["epoch"] == best["epoch"] == int(row["judged_epoch"])
    prepared_dir = next((smoke_run["base"] / "cache" / "prepared").iterdir())
    table = pa.ipc.open_file(prepared_dir / "test.arrow").read_all()
    x = torch.tensor(table.column("x").to_pylist())
    labels = table.column("label").to_pylist()
    with torch.no_grad():
        pred = model(feats(x)).argmax(1).tolist()
    right = sum(p == y for p, y in zip(pred, labels, strict=True))
    assert abs(best["test/acc"] - right / len(labels)) < 1e-6
    votes: dict[str, list[int]] = {}
    for track, p in zip(table.column("track").to_pylist(), pred, strict=True):
        votes.setdefault(track, []).append(p)
    truth = dict(zip(table.column("track").to_pylist(), labels, strict=True))
    # 2 segments per smoke track: a split vote is a tie (broken by probability in the report),
    # so only tracks with a clear majority are checked here, and counted either way.
    clear = {t: max(set(v), key=v.count) for t, v in votes.items() if len(set(v)) == 1}
    right_clear = sum(clear[t] == truth[t] for t in clear)
    assert right_clear / len(votes) - 1e-9 <= best["test/track_acc"]
    assert best["test/track_acc"] <= (right_clear + len(votes) - len(clear)) / len(votes) + 1e-9
    summary = (out / "summary.md").read_text()
    assert f"{best['test/acc']:.4f}" in summary and "★" in summary
    # test_predictions.csv holds the same predictions, segment for segment, and nothing else
    from raygenre.report import TEST_PREDICTIONS, read_test_predictions

    saved = read_test_predictions(out / TEST_PREDICTIONS)
    assert set(saved) == {best["cell_id"]}  # only the chosen cell was tested
    probs, saved_labels, saved_tracks = saved[best["cell_id"]]
    assert saved_labels == labels and saved_tracks == table.column("track").to_pylist()
    assert probs.argmax(1).tolist() == pred


def test_existing_run_is_not_overwritten_without_resume(smoke_run: dict) -> None:
    proc = run_cli(smoke_run["args"], cwd=smoke_run["base"])
    assert proc.returncode == 2
    assert "already exists" in proc.stderr and "--resume" in proc.stderr
    assert (smoke_run["out"] / "cells.csv").exists()


def assert_every_row_equal(got: dict[tuple, dict[str, str]],
                           reference: dict[tuple, dict[str, str]]) -> None:
    """Two `batch_epoch --smoke` histories (from `history_by_config`) hold the same rows, one
    per cell and epoch of the grid, with the same numbers. Every row is owed: the grid has
    ASHA off, so no trial stops early, and which trials run cannot depend on the order
    parallel trials report in."""
    grid = load_grid("batch_epoch").smoke()
    assert not grid.asha
    assert len(reference) == sum(c.deltas["epochs"] for c in grid.cells()), reference
    assert got.keys() == reference.keys(), (sorted(got.keys() - reference.keys()),
                                            sorted(reference.keys() - got.keys()))
    for key in reference:
        assert got[key] == reference[key], key


def test_same_seed_gives_identical_metrics(smoke_run: dict, tmp_path: Path) -> None:
    """A second run into fresh folders (data regenerated and re-prepared too) reports the same
    numbers for every cell and epoch."""
    args = ["batch_epoch", "--smoke", "--results", str(tmp_path / "results"),
            "--storage", str(tmp_path / "runs"), "--cache", str(tmp_path / "cache")]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    first = history_by_config(smoke_run["out"] / "history.csv")
    second = history_by_config(tmp_path / "results" / "batch_epoch-smoke" / "history.csv")
    assert_every_row_equal(second, first)


def _events(path: Path) -> list[tuple[str, int, float]]:
    """(tag, step, value) of every scalar in a TensorBoard event file (TFRecord framing)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out, data = [], path.read_bytes()
    i = 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        event = Event.FromString(data[i + 12:i + 12 + n])
        i += 12 + n + 4
        out += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
    return out


def test_tensorboard_has_the_cells_csv_names_by_epoch(smoke_run: dict) -> None:
    """One TensorBoard run per trial Tune ran (a shared trial holds its members' epochs)."""
    out = smoke_run["out"]
    assert f"tensorboard --logdir {out / 'tensorboard'}" in smoke_run["proc"].stdout
    cells = _rows(out / "cells.csv")
    trials = {c["trial_id"]: c for c in cells}
    tb = sorted((out / "tensorboard").iterdir())
    assert len(tb) == len(trials)
    history = {(h["cell_id"], int(h["epoch"])): h for h in _rows(out / "history.csv")}
    for run in tb:
        tid = run.name.split(",")[0]
        assert tid in trials and f"batch_size={trials[tid]['batch_size']}" in run.name
        longest = max((c for c in cells if c["trial_id"] == tid), key=lambda c: int(c["epoch"]))
        # The run's own files; its folders are its cells' HParams sessions (test_loggers.py).
        scalars = [e for f in run.iterdir() if f.is_file() for e in _events(f)]
        assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= {t for t, _, _ in scalars}
        for tag, step, value in scalars:
            if tag == "val/acc":
                assert abs(value - float(history[(longest["cell_id"], step)]["val/acc"])) < 1e-5
        assert max(s for _, s, _ in scalars) == int(longest["epoch"])
