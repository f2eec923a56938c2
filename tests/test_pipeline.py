"""Every grid runs end to end under --smoke, and the pipeline carries winners (slow)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from raygenre.gridfile import list_grids, load_grid

from .conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", [g for g in list_grids() if g != "batch_epoch"])
def test_every_grid_runs_under_smoke(name: str, tmp_path: Path, smoke_run: dict) -> None:
    proc = run_cli([name, "--smoke", "--results", str(tmp_path / "r"), "--storage",
                    str(tmp_path / "s"), "--cache", str(smoke_run["base"] / "cache")], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "r" / f"{name}-smoke"
    with open(out / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    assert len(trials) == load_grid(name).smoke().n_trials
    assert all(t["status"] in ("completed", "stopped_early") for t in trials)
    best = json.loads((out / "best.json").read_text())
    assert 0 <= best["test/acc"] <= 1
    if name == "best":
        assert "## Over seeds" in (out / "summary.md").read_text()


def test_pipeline_carries_each_winner_and_skips_finished_stages(tmp_path: Path,
                                                               smoke_run: dict) -> None:
    args = ["all", "--stages", "cnn,activations", "--smoke", "--results", str(tmp_path / "r"),
            "--storage", str(tmp_path / "s"), "--cache", str(smoke_run["base"] / "cache")]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    first = json.loads((tmp_path / "r" / "all-smoke" / "cnn" / "best.json").read_text())
    second = json.loads((tmp_path / "r" / "all-smoke" / "activations" / "best.json").read_text())
    carried = {k: first["config"][k] for k in load_grid("cnn").carry}
    assert second["carried"] == carried
    assert {k: second["base"][k] for k in carried} == carried
    md = (tmp_path / "r" / "pipeline-smoke.md").read_text()
    assert "| [cnn]" in md and "| [activations]" in md
    assert (tmp_path / "r" / "pipeline-smoke.png").stat().st_size > 0
    again = run_cli(args, tmp_path)  # everything finished: nothing runs again
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("finished earlier") == 2
    assert "[tune" not in again.stdout
    assert f"[grid] done: {tmp_path / 'r' / 'pipeline-smoke.md'}" in again.stdout
    # Another seed makes other numbers (split, init, shuffle): no stage may be reused.
    other = run_cli([*args, "--seed", "1"], tmp_path)
    assert other.returncode == 0, other.stdout[-3000:] + other.stderr[-3000:]
    assert "finished earlier" not in other.stdout
    assert other.stdout.count("were made otherwise") == 2 and "seed" in other.stdout
    redone = json.loads((tmp_path / "r" / "all-smoke" / "cnn" / "best.json").read_text())
    assert redone["base"]["seed"] == 1 and redone["shaped_by"]["base"]["seed"] == 1
