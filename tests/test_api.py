"""The Python API (raygenre.run, raygenre.load) and the command line over it: docs/api.md's
example run as written, exit statuses, --version, and a second data set refused."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

import raygenre
from raygenre.config import ConfigError
from raygenre.errors import DataError, Interrupted, NoResults
from raygenre.grid.file import load_grid
from raygenre.grid.options import RunOptions
from raygenre.paths import RunPaths
from raygenre.storage import Location
from raygenre.sweep import cli
from raygenre.sweep.cluster import ray_running
from raygenre.sweep.run_state import SOURCE_KEY, refuse_other_data

from .conftest import run_cli

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def _doc_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def api_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """docs/api.md's code blocks, run in order as a reader would paste them, in a fresh
    folder (its relative results= and storage= land there) with a cache of its own."""
    base = tmp_path_factory.mktemp("api")
    namespace: dict = {}
    cwd = os.getcwd()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYGENRE_CACHE", str(base / "cache"))
        mp.delenv("RAY_ADDRESS", raising=False)
        os.chdir(base)
        try:
            for i, block in enumerate(_doc_blocks()):
                exec(compile(block, f"{DOC}:python block {i + 1}", "exec"), namespace)
        finally:
            os.chdir(cwd)
    yield {"base": base, "ns": namespace}


def test_the_documented_example_runs_a_sweep_and_reads_it_back(api_run: dict) -> None:
    ns, base = api_run["ns"], api_run["base"]
    assert len(_doc_blocks()) == 2  # the example and Ray's reader: both ran
    res = ns["res"]
    assert isinstance(res, raygenre.Results)
    assert res.path == base / "results" / "batch_epoch-smoke"
    grid = load_grid("batch_epoch").smoke()
    cells = res.cells
    assert len(cells) == grid.n_cells
    assert {(int(b), int(e)) for b, e in zip(cells["batch_size"], cells["epochs"],
                                             strict=True)} == {
        (b, e) for b in grid.axes["batch_size"] for e in grid.axes["epochs"]}
    assert len(res.history) == cells["epoch"].sum()
    best = res.best
    assert best["cell_id"] in set(cells["cell_id"]) and "verdict" in best
    assert best["trial_id"] in set(cells["trial_id"])
    assert {"interval", "tied_with", "checkpoint"} <= set(best)
    assert res.configs is not None and len(res.configs) == grid.n_cells  # no replicates
    # What a result records: the data set, Ray's folder, and the command that remakes it.
    assert best["data_source"] == "builtin:synthetic"
    assert res.run_folder == str(base / "runs" / "batch_epoch-smoke")
    assert best["command"] == "python -m raygenre.grid batch_epoch --smoke --storage runs"
    # Ray was started for the sweep and stopped after it.
    assert not ray_running()


def test_the_checkpoint_is_the_tested_one_and_loads(api_run: dict) -> None:
    import torch

    res, meta = api_run["ns"]["res"], api_run["ns"]["meta"]
    row = res.cells.set_index("cell_id").loc[res.best["cell_id"]]
    assert res.checkpoint() == res.best["checkpoint"] == row["checkpoint"]
    assert Path(res.checkpoint()).is_dir()
    assert meta["metrics"]["epoch"] == res.best["epoch"] == row["judged_epoch"]
    features, model = api_run["ns"]["features"], api_run["ns"]["model"]
    x = torch.zeros(2, meta["runtime"]["segment_samples"])
    with torch.no_grad():
        assert model(features(x)).shape == (2, meta["runtime"]["num_classes"])
    # Every cell's own checkpoint, a shorter member's copy included.
    for cid, where in zip(res.cells["cell_id"], res.cells["checkpoint"], strict=True):
        assert res.checkpoint(cid) == where and Path(where).is_dir()
    with pytest.raises(KeyError, match="no cell 'nope'"):
        res.checkpoint("nope")


def test_load_reads_what_run_wrote(api_run: dict) -> None:
    res, again = api_run["ns"]["res"], api_run["ns"]["again"]
    assert again.path == res.path and again.best == res.best
    assert again.cells.equals(res.cells) and again.history.equals(res.history)
    on_disk = json.loads((res.path / "best.json").read_text())
    assert again.best == on_disk
    with pytest.raises(FileNotFoundError, match="no cells.csv"):
        raygenre.load(res.path.parent)


def test_load_reads_a_folder_written_before_cells(tmp_path: Path) -> None:
    """A results folder from before the words changed (trials.csv, one row per grid cell,
    with its `trial_id` and Tune's `run_id`; no cells.csv) loads with the new names: the
    same rows as `Results.cells`, `cell_id` holding the old trial_id and `trial_id` the old
    run_id, in the columns' old places."""
    old = tmp_path / "batch_epoch-smoke"
    old.mkdir()
    (old / "trials.csv").write_text(
        "trial_id,status,batch_size,epochs,epoch,run_id,checkpoint\n"
        f"abc_00000:e1,completed,8,1,1,abc_00000,{old / 'c1'}\n"
        f"abc_00000:e2,completed,8,2,2,abc_00000,{old / 'c2'}\n"
        f"abc_00001,stopped_early,16,2,1,abc_00001,{old / 'c3'}\n")
    res = raygenre.load(old)
    cells = res.cells
    assert list(cells.columns) == ["cell_id", "status", "batch_size", "epochs", "epoch",
                                   "trial_id", "checkpoint"]
    assert list(cells["cell_id"]) == ["abc_00000:e1", "abc_00000:e2", "abc_00001"]
    assert list(cells["trial_id"]) == ["abc_00000", "abc_00000", "abc_00001"]
    assert list(cells["status"]) == ["completed", "completed", "stopped_early"]
    assert res.checkpoint("abc_00000:e2") == str(old / "c2")


def test_load_reads_the_rest_of_an_old_folder_with_the_new_names(tmp_path: Path) -> None:
    """The rest of such a folder: history.csv's `trial_id` (a cell's), configs.csv's `trials`
    and best.json's old keys come back under the new names, values untouched."""
    old = tmp_path / "batch_epoch-smoke"
    old.mkdir()
    (old / "trials.csv").write_text("trial_id,status,epoch,run_id\n"
                                    "abc_00000:e1,completed,1,abc_00000\n"
                                    "abc_00000:e2,completed,2,abc_00000\n")
    (old / "history.csv").write_text("trial_id,batch_size,epoch,val/acc\n"
                                     "abc_00000:e1,8,1,0.5\n"
                                     "abc_00000:e2,8,1,0.5\nabc_00000:e2,8,2,0.6\n")
    (old / "configs.csv").write_text("config,replicates,trials\n"
                                     "batch_size=8,1,abc_00000:e2\n")
    (old / "best.json").write_text(json.dumps({
        "grid": "batch_epoch", "trial_id": "abc_00000:e2", "run_id": "abc_00000",
        "chosen_trials": ["abc_00000:e2"], "n_trials": 2, "n_runs": 1, "val/acc": 0.6}))
    res = raygenre.load(old)
    assert list(res.history.columns) == ["cell_id", "batch_size", "epoch", "val/acc"]
    assert list(res.history["cell_id"]) == ["abc_00000:e1", "abc_00000:e2", "abc_00000:e2"]
    assert res.configs is not None and list(res.configs.columns) == ["config", "replicates",
                                                                     "cells"]
    assert res.best == {"grid": "batch_epoch", "cell_id": "abc_00000:e2",
                        "trial_id": "abc_00000", "chosen_cells": ["abc_00000:e2"],
                        "n_cells": 2, "n_trials": 1, "val/acc": 0.6}


def test_ray_lists_trials_where_the_tables_list_cells(api_run: dict) -> None:
    res, analysis = api_run["ns"]["res"], api_run["ns"]["analysis"]
    ray_ids = {t.trial_id for t in analysis.trials}
    assert ray_ids == set(res.cells["trial_id"])
    assert len(ray_ids) < len(res.cells)  # epoch-prefix cells share a trial


def test_a_second_data_set_is_refused_before_any_work(api_run: dict, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    """The API's run on the built-in set holds results/ and runs/: another data set is
    refused in either, from Python and from the command line, naming the option to change;
    the same data set is not (it gets the usual resume-or-fresh question)."""
    base = api_run["base"]
    other = tmp_path / "gtzan"  # never read: the refusal comes first
    results, runs = str(base / "results"), str(base / "runs")
    with pytest.raises(ConfigError) as e:
        raygenre.run("batch_epoch", smoke=True, data=other, results=results,
                     storage=str(tmp_path / "elsewhere"))
    assert "--results" in str(e.value) and "builtin:synthetic" in str(e.value)
    assert str(other) in str(e.value) and "--fresh" in str(e.value)
    with pytest.raises(ConfigError, match=r"run folder .*batch_epoch-smoke \(--storage\)"):
        raygenre.run("batch_epoch", smoke=True, data=other, results=str(tmp_path / "r"),
                     storage=runs)
    assert cli.main(["batch_epoch", "--smoke", "--data", str(other), "--results", results,
                     "--storage", runs]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 'batch_epoch-smoke' was already run on other data")
    assert "--results" in err and "--storage" in err
    assert cli.main(["batch_epoch", "--smoke", "--data", "builtin", "--results", results,
                     "--storage", runs]) == 2
    assert "already exists" in capsys.readouterr().err
    assert not ray_running() and not (tmp_path / "elsewhere").exists()


def _paths(tmp_path: Path) -> RunPaths:
    return RunPaths(storage=Location.parse(tmp_path / "s"), name="g",
                    results_root=tmp_path / "r")


def test_resume_and_fresh_with_another_data_set(tmp_path: Path) -> None:
    """--fresh replaces; --resume does not hold the run folder's own path against the command
    (a moved folder of the same files resumes), but still refuses other results."""
    paths = _paths(tmp_path)
    paths.experiment.mkdir()
    paths.manifest.write_text(json.dumps({SOURCE_KEY: "/data/a"}))
    refuse_other_data(paths, "/data/b", resume=False, fresh=True)
    refuse_other_data(paths, "/data/b", resume=True, fresh=False)
    with pytest.raises(ConfigError, match="run folder"):
        refuse_other_data(paths, "/data/b", resume=False, fresh=False)
    refuse_other_data(paths, "/data/a", resume=False, fresh=False)
    paths.results.mkdir(parents=True)
    (paths.results / "best.json").write_text(json.dumps({SOURCE_KEY: "/data/a"}))
    refuse_other_data(paths, "/data/b", resume=True, fresh=False)  # that run's own results
    (paths.results / "best.json").write_text(json.dumps({SOURCE_KEY: "/data/c"}))
    with pytest.raises(ConfigError, match="results folder .* holds it on /data/c"):
        refuse_other_data(paths, "/data/b", resume=True, fresh=False)


@pytest.mark.parametrize(("raised", "status"), [
    (ConfigError("bad"), 2), (DataError("bad"), 1), (NoResults("bad"), 1),
    (Interrupted("stopped"), 130), (KeyboardInterrupt(), 130)])
def test_each_outcome_has_its_exit_status(raised: BaseException, status: int,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    def execute(opts: RunOptions) -> Path:
        raise raised

    monkeypatch.setattr(cli, "execute", execute)
    assert cli.main(["batch_epoch"]) == status
    err = capsys.readouterr().err
    assert err.startswith("error: bad") if status in (1, 2) else "[grid]" in err


@pytest.mark.parametrize(("args", "status", "says"), [
    (["batch_epoch", "--no-such-option"], 2, "unrecognized arguments: --no-such-option"),
    (["batch_epochs"], 2, "error: unknown grid 'batch_epochs'"),
    (["GRID_FILE"], 2, "grid: unknown config key 'no_such_key'"),
    (["batch_epoch", "--data", "MISSING"], 1, "error: data path MISSING does not exist"),
])
def test_exit_status_of_the_command(args: list[str], status: int, says: str,
                                    tmp_path: Path) -> None:
    """As a shell sees them: each fails before Ray starts, with one line that says why."""
    grid = tmp_path / "bad.yaml"
    grid.write_text("description: a key no config has\nbase: {model: mlp}\n"
                    "grid: {no_such_key: [1, 2]}\n")
    swap = {"GRID_FILE": str(grid), "MISSING": str(tmp_path / "missing")}
    args = [swap.get(a, a) for a in args]
    proc = run_cli([*args, "--storage", str(tmp_path / "s"), "--results", str(tmp_path / "r"),
                    "--cache", str(tmp_path / "c")], cwd=tmp_path, timeout=120)
    assert proc.returncode == status, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert says.replace("MISSING", swap["MISSING"]) in proc.stderr
    assert "Traceback" not in proc.stderr and "[ray]" not in proc.stdout


def test_version_and_help(tmp_path: Path) -> None:
    proc = run_cli(["--version"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"raygenre {importlib.metadata.version('raygenre')}"
    helped = run_cli(["--help"], cwd=tmp_path, timeout=120)
    assert helped.returncode == 0
    for line in ("exit status:", "  1 ", "  2 ", "  130 ", "examples:",
                 "python -m raygenre.grid batch_epoch --smoke"):
        assert line in helped.stdout, line


def test_options_record_the_command_that_remakes_them() -> None:
    """The command a result records (from Python) parses back to the same options."""
    opts = RunOptions(grid="batch_epoch", data=Path("/d/my data"), smoke=True, seed=3,
                      stages=None, cpus_per_trial=0.5, results="out")
    cmd = opts.as_command()
    assert cmd.startswith("python -m raygenre.grid batch_epoch ") and "'/d/my data'" in cmd
    argv = shlex.split(cmd)[3:]
    assert cli.options(cli.parser().parse_args(argv), argv) == opts
    assert RunOptions(grid="all", stages="cnn, activations").stages == ("cnn", "activations")


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"resume": True, "fresh": True}, "--resume and --fresh contradict"),
    ({"preset": "gpu"}, "--preset 'gpu'"),
    ({"seed": "3"}, "--seed: an integer"),
    ({"cpus_per_trial": "1"}, "--cpus-per-trial: a number"),
])
def test_api_options_are_checked_before_any_work(kwargs: dict, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        raygenre.run("batch_epoch", **kwargs)
    assert not ray_running()


def test_the_pipeline_is_the_command_lines() -> None:
    with pytest.raises(ConfigError, match="python -m raygenre.grid all"):
        raygenre.run("all")


def test_options_are_declared_once_the_flags_and_keywords_follow() -> None:
    """Every RunOptions field but `grid` and `command` is a --flag and (but the pipeline's
    `stages`) a keyword of raygenre.run, with the field's default and help: a field alone adds
    an option."""
    import dataclasses
    import inspect

    from raygenre.grid.options import option_fields

    names = [f.name for f in option_fields()]
    assert {f.name for f in dataclasses.fields(RunOptions)} - set(names) == {"grid", "command"}
    flags = {a.dest: a for a in cli.parser()._actions if a.option_strings}
    assert set(flags) - {"help", "version", "list"} == set(names)
    params = inspect.signature(raygenre.run).parameters
    assert list(params) == ["grid", *(n for n in names if n != "stages")]
    for f in option_fields():
        assert f.metadata["help"], f"{f.name}: an option needs its help"
        assert flags[f.name].option_strings == [f"--{f.name.replace('_', '-')}"]
        default = None if f.name == "logger" else f.default  # argparse appends to a list
        assert flags[f.name].default == default, f.name
        if f.name != "stages":
            assert params[f.name].default == f.default and params[f.name].kind is \
                inspect.Parameter.KEYWORD_ONLY
            assert f"{f.name}: " in (raygenre.run.__doc__ or "")
    assert flags["preset"].choices == ["auto", "study", "cpu"]
    assert flags["seed"].type is int and flags["cpus_per_trial"].type is float
    with pytest.raises(TypeError, match="no_such_option"):
        raygenre.run("batch_epoch", no_such_option=1)


def test_a_replicate_count_below_one_is_refused_naming_the_option() -> None:
    with pytest.raises(ConfigError, match=re.escape("--replicates: an integer of at least 1, "
                                                    "got 0")):
        raygenre.run("batch_epoch", replicates=0)
    assert not ray_running()


def test_the_command_runs_every_exit_hook_before_its_quick_exit(tmp_path: Path) -> None:
    """exit_now skips only the modules' teardown: a hook registered on import (a temporary
    folder's clean-up, weakref.finalize's) and one registered late still run, and the status
    is the command's."""
    import subprocess
    import sys

    marker = tmp_path / "late_hook_ran"
    script = (
        "import atexit, pathlib, sys, tempfile\n"
        "import raygenre\n"
        "from raygenre.sweep.cli import exit_now\n"
        "kept = tempfile.TemporaryDirectory()\n"  # cleaned by weakref.finalize's exit hook
        "print(kept.name)\n"
        f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('ran'))\n"
        "exit_now(3)\n")
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert marker.read_text() == "ran"
    assert not Path(proc.stdout.strip()).exists()
