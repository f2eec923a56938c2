"""Every grid runs end to end under --smoke, and the pipeline carries winners (slow)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from raygenre.grid.file import list_grids, load_grid

from .conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", [g for g in list_grids() if g != "batch_epoch"])
def test_every_grid_runs_under_smoke(name: str, tmp_path: Path, smoke_run: dict) -> None:
    proc = run_cli([name, "--smoke", "--results", str(tmp_path / "r"), "--storage",
                    str(tmp_path / "s"), "--cache", str(smoke_run["base"] / "cache")], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "r" / f"{name}-smoke"
    with open(out / "cells.csv") as f:
        cells = list(csv.DictReader(f))
    assert len(cells) == load_grid(name).smoke().n_cells
    assert all(c["status"] in ("completed", "stopped_early") for c in cells)
    best = json.loads((out / "best.json").read_text())
    ids = {c["cell_id"] for c in cells}
    assert best["cell_id"] in ids and set(best["chosen_cells"]) <= ids
    assert best["n_cells"] == len(cells)
    assert best["n_trials"] == len({c["trial_id"] for c in cells})
    low, high = best["interval"]["low"], best["interval"]["high"]
    assert low <= best[best["metric"]] <= high
    reads = _ledger_readers(smoke_run)
    if name == "best":  # a comparison fixed in advance: every cell is tested, once
        summary = (out / "summary.md").read_text()
        assert "## Configurations over seeds" in summary
        assert best["replicates"] == 3 and len(best["chosen_cells"]) == 3
        tested = {r.rsplit(" ", 1)[1] for r in reads if r.startswith("best-smoke: ")}
        assert tested == ids
    else:  # only the chosen cell reads the test split
        mine = [r for r in reads if r.startswith(f"{name}-smoke: final evaluation")]
        assert mine == [f"{name}-smoke: final evaluation of cell {best['cell_id']}"]


def _ledger_readers(smoke_run: dict) -> list[str]:
    return [json.loads(f.read_text())["reader"] for f in
            (smoke_run["base"] / "cache" / "test_ledger").glob("*/reads/*.json")]


def test_pipeline_carries_each_winner_and_skips_finished_stages(tmp_path: Path,
                                                               smoke_run: dict) -> None:
    args = ["all", "--stages", "cnn,activations", "--smoke", "--results", str(tmp_path / "r"),
            "--storage", str(tmp_path / "s"), "--cache", str(smoke_run["base"] / "cache")]
    before = len(_ledger_readers(smoke_run))
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(_ledger_readers(smoke_run)) == before + 2  # each stage's chosen cell, once
    first = json.loads((tmp_path / "r" / "all-smoke" / "cnn" / "best.json").read_text())
    second = json.loads((tmp_path / "r" / "all-smoke" / "activations" / "best.json").read_text())
    # The carried config is the winner's, or one tied with it that trains fewer epochs.
    carry = first["carry"]
    winner = " ".join(f"{k}={v}" for k, v in first["swept"].items())
    assert carry["label"] == winner or (
        carry["label"] in first["tied_with"]
        and carry["config"]["epochs"] < first["config"]["epochs"])
    carried = {k: carry["config"][k] for k in load_grid("cnn").next_stage_keys}
    assert second["carried"] == carried
    assert {k: second["base"][k] for k in carried} == carried
    md = (tmp_path / "r" / "pipeline-smoke.md").read_text()
    assert "| [cnn]" in md and "| [activations]" in md
    assert (tmp_path / "r" / "pipeline-smoke.png").stat().st_size > 0
    again = run_cli(args, tmp_path)  # everything finished: nothing runs again
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("finished earlier") == 2
    assert "[tune" not in again.stdout
    assert len(_ledger_readers(smoke_run)) == before + 2  # a reused stage reads no test
    assert f"[grid] done: {tmp_path / 'r' / 'pipeline-smoke.md'}" in again.stdout
    # Another seed makes other numbers (split, init, shuffle): no stage may be reused.
    other = run_cli([*args, "--seed", "1"], tmp_path)
    assert other.returncode == 0, other.stdout[-3000:] + other.stderr[-3000:]
    assert "finished earlier" not in other.stdout
    assert other.stdout.count("were made otherwise") == 2 and "seed" in other.stdout
    redone = json.loads((tmp_path / "r" / "all-smoke" / "cnn" / "best.json").read_text())
    assert redone["base"]["seed"] == 1 and redone["shaped_by"]["base"]["seed"] == 1
