"""--logger (MLflow, W&B) and TensorBoard's HParams view: one entry per cell, though Ray runs
one Tune trial for its several members (cells that differ only in epochs)."""

from __future__ import annotations

import importlib.util
import math
import pickle
import struct
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import raygenre
from raygenre.config import METRICS, Config, ConfigError
from raygenre.grid.file import load_grid
from raygenre.grid.objective import Objective
from raygenre.grid.options import RunOptions
from raygenre.paths import RunPaths
from raygenre.storage import Location
from raygenre.sweep import cli, loggers
from raygenre.sweep.loggers import Member, MemberCallback, MLflowMembers

from .conftest import run_cli

HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None
needs_mlflow = pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow not installed: pip install "
                                                         "-e '.[dev]'")
HAS_WANDB = importlib.util.find_spec("wandb") is not None
needs_wandb = pytest.mark.skipif(not HAS_WANDB, reason="wandb not installed: pip install "
                                                       "-e '.[dev]'")


def _trial(trial_id: str, members: list[int], variant: str | None = None,
           batch_size: int = 16) -> Any:
    """A Tune trial as the callbacks see it: its id and config (`_param_space`'s shape)."""
    cells = {"batch_size": batch_size, "epochs": max(members), "members": members}
    if variant:
        cells["variant"] = variant
    return SimpleNamespace(trial_id=trial_id, config={**Config().to_dict(), "cells": cells})


def _result(epoch: int) -> dict[str, Any]:
    return {"epoch": epoch, "train/loss": 2.0 / epoch, "train/acc": 0.1 * epoch,
            "val/loss": 2.5 / epoch, "val/acc": [0.2, 0.5, 0.4, 0.6, 0.6][epoch - 1],
            "val/track_acc": 0.3, "lr": 1e-3, "time_total_s": 1.0 * epoch}


class Recorder(MemberCallback):
    def __init__(self, judge_epoch: str = "last") -> None:
        super().__init__(Objective("val/acc", "max", judge_epoch))
        self.events: list[tuple] = []

    def member_epoch(self, trial: Any, member: Member, epoch: int,
                     metrics: dict[str, float]) -> None:
        self.events.append(("epoch", member.cell_id, epoch))

    def member_end(self, trial: Any, member: Member) -> None:
        self.events.append(("end", member.cell_id, member.status))


def _report(cb: MemberCallback, trial: Any, epochs: range) -> None:
    for e in epochs:
        cb.on_trial_result(iteration=e, trials=[trial], trial=trial, result=_result(e))


# --- splitting trials into cells (no Ray) ----------------------------------------------------

def test_a_shared_trial_is_split_into_its_members_with_their_own_epochs() -> None:
    cb, t = Recorder(), _trial("abc_00000", [2, 3, 5])
    _report(cb, t, range(1, 6))
    cb.on_trial_complete(iteration=5, trials=[t], trial=t)
    epochs = {cid: [e for kind, i, e in cb.events if kind == "epoch" and i == cid]
              for cid in ("abc_00000:e2", "abc_00000:e3", "abc_00000:e5")}
    assert epochs == {"abc_00000:e2": [1, 2], "abc_00000:e3": [1, 2, 3],
                      "abc_00000:e5": [1, 2, 3, 4, 5]}
    ends = [e for e in cb.events if e[0] == "end"]
    assert ends == [("end", "abc_00000:e2", "completed"), ("end", "abc_00000:e3", "completed"),
                    ("end", "abc_00000:e5", "completed")]
    # Each ends as soon as its last epoch is in: the 2-epoch cell before the trial's epoch 3.
    assert cb.events.index(ends[0]) < cb.events.index(("epoch", "abc_00000:e3", 3))
    members = cb.members["abc_00000"]
    assert [m.params["epochs"] for m in members] == [2, 3, 5]
    assert all(m.params["batch_size"] == 16 and "cells/members" not in m.params
               and "members" not in m.params for m in members)
    assert all(m.trial_id == "abc_00000" for m in members)
    # The 3-epoch cell (val/acc 0.2, 0.5, 0.4) as the grid judges it: at its last epoch by
    # default, named so; under early stopping at its best, named so.
    assert cb.summary(members[1]) == pytest.approx({
        **{k: _result(3)[k] for k in METRICS}, "last/val/acc": 0.4, "judged_epoch": 3})
    early = Recorder("best")
    _report(early, t, range(1, 6))
    assert early.judged(early.members["abc_00000"][1]) == pytest.approx(
        {"best/val/acc": 0.5, "judged_epoch": 2})


def test_a_callback_pickled_before_the_rule_logs_as_it_did() -> None:
    """Tune restores callbacks from the run folder: one pickled with a metric and mode but no
    objective (before the grid's rule was passed) keeps its metric and its best-epoch name."""
    cb = Recorder()
    state = {k: v for k, v in vars(cb).items() if k != "objective"}
    old = Recorder.__new__(Recorder)
    old.__setstate__({**state, "metric": "val/loss", "mode": "min"})
    assert old.objective == Objective("val/loss", "min", "best")


def test_one_cell_trials_keep_the_trial_id_and_a_variant_is_a_parameter() -> None:
    cb, t = Recorder(), _trial("abc_00001", [2], variant="adam")
    _report(cb, t, range(1, 3))
    (m,) = cb.members["abc_00001"]
    assert (m.cell_id, m.trial_id, m.params["variant"], m.params["epochs"], m.status) == (
        "abc_00001", "abc_00001", "adam", 2, "completed")
    # Nested values are flattened as Ray's own MLflow callback flattens them; lists stay lists.
    assert isinstance(m.params["hidden"], list)


def test_stopped_and_failed_trials_end_their_unfinished_members() -> None:
    cb = Recorder()
    stopped, failed = _trial("abc_00002", [1, 3, 5]), _trial("abc_00003", [2, 4])
    _report(cb, stopped, range(1, 3))  # ASHA stops it after epoch 2
    cb.on_trial_complete(iteration=2, trials=[stopped], trial=stopped)
    _report(cb, failed, range(1, 2))
    cb.on_trial_error(iteration=1, trials=[failed], trial=failed)
    ends = {i: s for kind, i, s in cb.events if kind == "end"}
    assert ends == {"abc_00002:e1": "completed", "abc_00002:e3": "stopped_early",
                    "abc_00002:e5": "stopped_early", "abc_00003:e2": "error",
                    "abc_00003:e4": "error"}
    assert sorted(cb.members["abc_00002"][2].history) == [1, 2]


def test_a_resume_logs_no_epoch_twice_and_goes_on_after_an_error() -> None:
    cb, t = Recorder(), _trial("abc_00004", [2, 4])
    _report(cb, t, range(1, 4))
    cb.on_trial_error(iteration=3, trials=[t], trial=t)
    # Tune restores the callback from the run folder and its state from its snapshot.
    again = pickle.loads(pickle.dumps(Recorder()))
    again.set_state(pickle.loads(pickle.dumps(cb.get_state())))
    _report(again, t, range(2, 5))  # resumed from the epoch-2 checkpoint
    assert again.events == [("epoch", "abc_00004:e4", 4), ("end", "abc_00004:e4", "completed")]
    assert again.members["abc_00004"][0].status == "completed"  # e2 ended before the error


# --- options ---------------------------------------------------------------------------------

def test_logger_option_parses_and_is_recorded() -> None:
    opts = RunOptions(grid="batch_epoch", smoke=True, logger="mlflow")
    assert opts.logger == ("mlflow",)
    assert RunOptions(grid="x", logger=["MLflow", "wandb,mlflow"]).logger == ("mlflow", "wandb")
    cmd = opts.as_command()
    assert "--logger mlflow" in cmd
    argv = cmd.split()[3:]
    assert cli.options(cli.parser().parse_args(argv), argv) == opts
    assert RunOptions(grid="x").logger == ()


def test_an_unknown_logger_is_named() -> None:
    with pytest.raises(ConfigError, match=r"--logger 'comet': choose from mlflow, wandb"):
        raygenre.run("batch_epoch", logger="comet")


def test_logger_wandb_without_wandb_says_what_to_install(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # wandb is in the dev extra: its absence is what importlib would report without it.
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    with pytest.raises(ConfigError) as e:
        raygenre.run("batch_epoch", smoke=True, logger="wandb", storage=tmp_path / "s",
                     results=tmp_path / "r", cache=tmp_path / "c")
    assert str(e.value) == ("--logger wandb needs the wandb package, which is not installed: "
                            "pip install 'wandb>=0.19.10'")
    assert not (tmp_path / "s").exists()


@needs_wandb
def test_logger_wandb_online_without_a_key_fails_before_any_trial(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without this check wandb.init failed inside Tune's callback at the first epoch."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no W&B settings
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    proc = run_cli(["batch_epoch", "--smoke", "--logger", "wandb", "--storage",
                    str(tmp_path / "s"), "--results", str(tmp_path / "r"), "--cache",
                    str(tmp_path / "c")], cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --logger wandb: no W&B API key found") and \
        "WANDB_MODE=offline" in last
    assert "Traceback" not in proc.stderr and "[tune" not in proc.stdout


def test_a_resume_logs_where_the_run_started(tmp_path: Path) -> None:
    paths = RunPaths(Location.parse(str(tmp_path / "runs")), "g", tmp_path / "results")
    paths.experiment.mkdir()
    loggers.record(paths, ("mlflow",), ["MLflow: here"])
    assert loggers.check_resume(paths, ()) == ["MLflow: here"]
    assert loggers.check_resume(paths, ("mlflow",)) == ["MLflow: here"]
    with pytest.raises(ConfigError, match="--logger wandb: this run was started with --logger "
                                          "mlflow"):
        loggers.check_resume(paths, ("wandb",))
    paths.loggers.local_path.unlink()  # a run started before --logger: it logged nowhere
    with pytest.raises(ConfigError, match="started with --logger none"):
        loggers.check_resume(paths, ("mlflow",))


# --- MLflow, for real, on a local file store ------------------------------------------------

@needs_mlflow
def test_mlflow_resume_continues_each_run_and_duplicates_none(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = (tmp_path / "mlflow").as_uri()
    cb = MLflowMembers(uri, "g", {"raygenre.grid": "g"}, Objective("val/acc", "max"))
    frozen = pickle.dumps(cb)  # what Tune keeps in the run folder, before setup
    cb.setup()
    t = _trial("abc_00005", [2, 4])
    _report(cb, t, range(1, 4))  # interrupted after epoch 3: its snapshot said epoch 2
    state = Recorder().get_state()
    state["members"] = {"abc_00005": [Member(**{**vars(m), "history": dict(m.history)})
                                      for m in cb.members["abc_00005"]]}
    for m in state["members"]["abc_00005"]:
        m.history.pop(3, None)
        m.status = "completed" if m.epochs == 2 else None
    again = pickle.loads(frozen)
    again.set_state(state)
    again.setup()
    _report(again, t, range(3, 5))
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("g").experiment_id])
    assert sorted(r.data.tags["raygenre.cell_id"] for r in runs) == ["abc_00005:e2",
                                                                    "abc_00005:e4"]
    assert {r.data.tags["raygenre.trial_id"] for r in runs} == {"abc_00005"}
    for r in runs:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val/acc")]
        assert steps == list(range(1, int(r.data.params["epochs"]) + 1))
        assert r.info.status == "FINISHED" and r.data.tags["raygenre.status"] == "completed"


@pytest.fixture(scope="module")
def mlflow_sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """batch_epoch --smoke (trials of two members each) with --logger mlflow and (where
    installed) wandb, the latter offline (local files, no account), from Python."""
    base = tmp_path_factory.mktemp("loggers")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "RAY_ADDRESS",
                     "WANDB_PROJECT"):
            mp.delenv(name, raising=False)
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        res = raygenre.run("batch_epoch", smoke=True, results=base / "results",
                           storage=base / "runs", cache=base / "cache",
                           logger="mlflow,wandb" if HAS_WANDB else "mlflow")
    yield {"base": base, "res": res}


@needs_mlflow
def test_mlflow_has_every_cell_with_its_config_and_epochs(mlflow_sweep: dict) -> None:
    from mlflow import MlflowClient

    res, base = mlflow_sweep["res"], mlflow_sweep["base"]
    cells = res.cells.set_index("cell_id")
    assert (cells["trial_id"].value_counts() > 1).any()  # the case in point: shared trials
    client = MlflowClient((base / "results" / "mlflow").as_uri())
    experiment = client.get_experiment_by_name("batch_epoch-smoke")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == len(cells) == load_grid("batch_epoch").smoke().n_cells
    assert {r.data.tags["raygenre.cell_id"] for r in runs} == set(cells.index)
    history = res.history.set_index(["cell_id", "epoch"])
    for r in runs:
        cid = r.data.tags["raygenre.cell_id"]
        row = cells.loc[cid]
        assert r.info.run_name == cid and r.info.status == "FINISHED"
        assert r.data.tags["raygenre.trial_id"] == row["trial_id"]
        assert int(r.data.params["epochs"]) == row["epochs"]
        assert int(r.data.params["batch_size"]) == row["batch_size"]
        assert r.data.params["model"] == "cnn1" and "cells/members" not in r.data.params
        for m in METRICS:
            points = client.get_metric_history(r.info.run_id, m)
            assert sorted(p.step for p in points) == list(range(1, row["epochs"] + 1)), (cid, m)
            for p in points:
                want = history.loc[(cid, p.step), m]
                assert (math.isnan(p.value) and math.isnan(want)) or p.value == pytest.approx(
                    want, rel=1e-6), (cid, m, p.step)
        # The judged figure under batch_epoch's rule (its last epoch), by cells.csv's name;
        # no best-epoch figure beside it to be read as the cell's value.
        assert r.data.metrics["last/val/acc"] == pytest.approx(row["last/val/acc"], rel=1e-6)
        assert r.data.metrics["judged_epoch"] == row["judged_epoch"] == row["epochs"]
        assert "best/val/acc" not in r.data.metrics


def _events(path: Path) -> Iterator[Any]:
    """An event file's records (TFRecord: length, its CRC, the bytes, their CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    data, i = path.read_bytes(), 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        yield Event.FromString(data[i + 12:i + 12 + n])
        i += 12 + n + 4


@needs_mlflow  # the same sweep
def test_tensorboard_hparams_has_a_session_per_cell(mlflow_sweep: dict) -> None:
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    res = mlflow_sweep["res"]
    cells = res.cells.set_index("cell_id")
    sessions = {}
    for f in (res.path / "tensorboard").rglob("events.out.tfevents.*"):
        for ev in _events(f):
            for v in ev.summary.value:
                if v.tag == "_hparams_/session_start_info":
                    data = HParamsPluginData.FromString(v.metadata.plugin_data.content)
                    sessions[f.parent.name] = (data.session_start_info.hparams, f.parent)
    assert sorted(sessions) == sorted(c.replace(":", "_") for c in cells.index)
    for cid, row in cells.iterrows():
        hparams, folder = sessions[cid.replace(":", "_")]
        assert hparams["epochs"].number_value == row["epochs"]
        assert hparams["batch_size"].number_value == row["batch_size"]
        assert hparams["model"].string_value == "cnn1"
        judged = {v.tag: v.simple_value for f in folder.glob("events.out.tfevents.*")
                  for ev in _events(f) for v in ev.summary.value
                  if v.tag.startswith(("hparams/last/", "hparams/best/"))}
        assert judged == {"hparams/last/val/acc": pytest.approx(row["last/val/acc"], rel=1e-6)}


def _wandb_records(path: Path) -> Iterator[Any]:
    """An offline W&B run file's records: after a 7-byte header (":W&B", magic, version),
    LevelDB-log chunks in 32 KiB blocks (CRC, length, type: 1 whole, 2-4 first/middle/last)
    holding `Record` protobufs. Read here because wandb 0.31 reads them only in its Go core."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    i, block, parts = 7, 32768, b""
    while i + 7 <= len(data):
        if block - i % block < 7:  # a block's tail too short for a header is padding
            i += block - i % block
            continue
        _crc, n, kind = struct.unpack("<IHB", data[i:i + 7])
        parts += data[i + 7:i + 7 + n]
        i += 7 + n
        if kind in (1, 4):
            yield wandb_internal_pb2.Record.FromString(parts)
            parts = b""


@needs_wandb  # the same sweep
def test_wandb_has_every_cell_with_its_config_and_epochs(mlflow_sweep: dict) -> None:
    import json

    res = mlflow_sweep["res"]
    cells = res.cells.set_index("cell_id")
    history = res.history.set_index(["cell_id", "epoch"])
    files = sorted((mlflow_sweep["base"] / "results" / "wandb").glob("offline-run-*/*.wandb"))
    runs = {}
    for f in files:
        recs = list(_wandb_records(f))
        (run,) = [r.run for r in recs if r.WhichOneof("record_type") == "run"]
        config = {i.key: json.loads(i.value_json) for i in run.config.update}
        steps = [{(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                  for i in r.history.item} for r in recs
                 if r.WhichOneof("record_type") == "history"]
        (exit_code,) = [r.exit.exit_code for r in recs if r.WhichOneof("record_type") == "exit"]
        runs[run.display_name] = (config, steps, exit_code)
    assert len(files) == len(runs) == len(cells)  # one W&B run per cell, none twice
    assert set(runs) == set(cells.index)
    for cid, row in cells.iterrows():
        config, steps, exit_code = runs[cid]
        assert config["epochs"] == row["epochs"]
        assert config["batch_size"] == row["batch_size"] and config["model"] == "cnn1"
        assert "cells/members" not in config and exit_code == 0
        assert [s["epoch"] for s in steps] == list(range(1, row["epochs"] + 1))
        for s in steps:
            for m in METRICS:
                want = history.loc[(cid, s["epoch"]), m]
                assert s[m] == pytest.approx(want, rel=1e-6) or (math.isnan(want) and
                                                                  math.isnan(s[m]))
