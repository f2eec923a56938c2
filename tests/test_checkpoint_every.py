"""`--checkpoint-every k` (issue 36): a trial checkpoints at epochs k, 2k, ..., at its last, and
wherever the sweep will judge, test or stop it; metrics are still reported every epoch. The
numbers do not depend on k, and a trial killed between checkpoints resumes to the same history.
The slow tests run real sweeps (`pytest -m slow`)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from raygenre.config import Config, ConfigError
from raygenre.grid.objective import Objective
from raygenre.grid.options import RunOptions
from raygenre.storage import Location
from raygenre.training.builder import Runtime
from raygenre.training.checkpoints import STATE_FILE, read_meta
from raygenre.training.loop import LocalSeam, train_loop

from .conftest import history_by_config, kill_tree, run_cli

BEST = Objective("val/acc", "max", "best")
LAST = Objective("val/acc", "max", "last")


def _data() -> dict:
    g = torch.Generator().manual_seed(1)
    out = {}
    for split, k in (("train", 48), ("val", 24)):
        x = torch.randn(k, 64, generator=g)
        out[split] = (x, x[:, :3].argmax(1))
    return out


def _run(folder: Path, every: int, epochs: int = 7, seam: type = LocalSeam, **kw) -> LocalSeam:
    cfg = Config(model="mlp", features="waveform", hidden=(16,), lr=3e-3, batch_size=8,
                 dropout=0.2, epochs=epochs, ema=0.9)
    s = seam(_data(), folder, **kw)
    train_loop(cfg, Runtime(3, 64, threads=1, checkpoint_every=every), s)
    return s


def _saved(folder: Path) -> list[int]:
    return sorted(int(d.name.split("_")[1]) for d in folder.glob("epoch_*"))


STRIP = ("epoch_s", "train_s")


def _numbers(seam: LocalSeam) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in STRIP} for r in seam.reports]


class _Killed(Exception):
    pass


class _KilledAfter(LocalSeam):
    """A trial killed once epoch `stop` is reported: between checkpoints, under k = 3."""

    def __init__(self, data: dict, folder: Path, stop: int) -> None:
        super().__init__(data, folder)
        self.stop = stop

    def report(self, metrics: dict, checkpoint: Path | None) -> None:
        super().report(metrics, checkpoint)
        if metrics["epoch"] == self.stop:
            raise _Killed


class _KeepsTwo(LocalSeam):
    def must_keep(self, history: list[dict]) -> bool:
        return history[-1]["epoch"] == 2  # as a rung, a best or a member's epoch would be


def test_every_k_epochs_and_the_last_same_numbers_and_a_resume_repeats_the_rest(
        tmp_path: Path) -> None:
    every = _run(tmp_path / "k1", 1)
    third = _run(tmp_path / "k3", 3)
    assert _saved(every.folder) == [1, 2, 3, 4, 5, 6, 7]
    assert _saved(third.folder) == [3, 6, 7]  # k, 2k, and the last
    assert _numbers(third) == _numbers(every)  # reported every epoch, the same numbers
    assert _saved(_run(tmp_path / "kept", 3, seam=_KeepsTwo).folder) == [2, 3, 6, 7]

    # Killed after epoch 5 (its checkpoint is epoch 3's), then started again: epochs 4 and 5
    # are trained again from epoch 3's state, and everything equals the uninterrupted run.
    with pytest.raises(_Killed):
        _run(tmp_path / "resumed", 3, seam=_KilledAfter, stop=5)
    assert _saved(tmp_path / "resumed") == [3]
    resumed = _run(tmp_path / "resumed", 3)
    assert [r["epoch"] for r in resumed.reports] == [4, 5, 6, 7]
    assert _numbers(resumed) == _numbers(every)[3:]
    for epoch in (6, 7):
        a = torch.load(every.folder / f"epoch_{epoch:04d}" / STATE_FILE, weights_only=True)
        b = torch.load(resumed.folder / f"epoch_{epoch:04d}" / STATE_FILE, weights_only=True)
        for part in ("model", "trained"):
            assert all(torch.equal(a[part][n], b[part][n]) for n in a[part])
    histories = [[{k: v for k, v in h.items() if k not in STRIP}
                  for h in read_meta(s.folder / "epoch_0007")["history"]]
                 for s in (resumed, every)]
    assert histories[0] == histories[1]
    assert read_meta(resumed.folder / "epoch_0007")["runtime"]["checkpoint_every"] == 3


def _history(values: list[float]) -> list[dict]:
    return [{"epoch": e, "val/acc": v} for e, v in enumerate(values, 1)]


def test_what_a_sweep_must_keep_between_every_kth_checkpoint() -> None:
    from raygenre.sweep.runners import MemberCheckpoints, MustKeep

    # Judged at the last epoch: only ASHA's rungs (and the loop's own k and last epoch).
    rungs = MustKeep(LAST, rungs=(1, 3, 9))
    assert [e for e in range(1, 10) if rungs(_history([0.5] * e))] == [1, 3, 9]
    # Judged at the best epoch: each new best (the latest on a tie, as Tune keeps them), so
    # Tune's best checkpoint is the trial's best epoch whatever k is.
    best = MustKeep(BEST)
    acc = [0.2, 0.1, 0.3, 0.3, 0.25, float("nan"), 0.4]
    assert [e for e in range(1, 8) if best(_history(acc[:e]))] == [1, 3, 4, 7]
    # A shared trial's shorter members (4 of 2, 4, 6 epochs), judged at their last epoch.
    members = MustKeep(LAST, members=MemberCheckpoints(Location("/nowhere"), [2, 4, 6], LAST))
    assert [e for e in range(1, 7) if members(_history([0.5] * e))] == [2, 4]
    # And all of it survives the trip to a Ray Train worker as plain values.
    spec = MustKeep(BEST, (1, 3), MemberCheckpoints(Location("/m"), [2, 4], BEST)).spec()
    again = MustKeep.from_spec(json.loads(json.dumps(spec)))
    assert again.rungs == (1, 3) and again.objective == BEST
    assert again.members.members == [2, 4] and again.members.folder.uri == Location("/m").uri


@pytest.mark.parametrize("grace, rf, max_t", [(1, 3, 10), (1, 2, 16), (2, 3, 20), (1, 4, 7),
                                              (3, 2, 30)])
def test_rung_epochs_are_where_ray_asha_decides(grace: int, rf: int, max_t: int) -> None:
    """Each epoch e < max_t: a trial best until e and worst at e is stopped there exactly when
    ASHA holds a rung at e (trials ahead of it recorded the best value at every rung)."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from raygenre.sweep.runners import rung_epochs

    asha = ASHAScheduler(time_attr="epoch", metric="val/acc", mode="max", max_t=max_t,
                         grace_period=grace, reduction_factor=rf)
    leader = SimpleNamespace(trial_id="leader")
    asha.on_trial_add(None, leader)
    for e in range(1, max_t):
        asha.on_trial_result(None, leader, {"epoch": e, "val/acc": 1.0})
    stops = []
    for e in range(1, max_t):
        trial = SimpleNamespace(trial_id=f"t{e}")
        asha.on_trial_add(None, trial)
        for before in range(1, e):
            asha.on_trial_result(None, trial, {"epoch": before, "val/acc": 1.0})
        if asha.on_trial_result(None, trial, {"epoch": e, "val/acc": 0.0}) == \
                TrialScheduler.STOP:
            stops.append(e)
    assert tuple(stops) == tuple(r for r in rung_epochs(grace, rf, max_t) if r < max_t)


def test_the_plan_line_prices_checkpoint_every_and_says_what_a_resume_repeats() -> None:
    from raygenre.sweep.tuner import checkpoint_traffic as priced

    cfg = Config(model="mlp", features="waveform", hidden=(16,), epochs=7)
    plans = (SimpleNamespace(config=cfg, members=[7]),)
    prepared = SimpleNamespace(genres=tuple(range(3)), counts={"val": 24}, segment_samples=64)
    paths = SimpleNamespace(storage=SimpleNamespace(bucket="b"))

    def checkpoint_traffic(_: None, paths: SimpleNamespace, every: int = 1,
                           rungs: tuple[int, ...] = ()) -> str:
        return priced(plans, prepared, paths, every, rungs)

    one = checkpoint_traffic(None, paths)
    assert "per trial per epoch" in one and "(7 epochs over 1 trial(s))" in one
    assert "a resume redoes at most the epoch under way" in one
    three = checkpoint_traffic(None, paths, 3)
    assert "every 3 epochs" in three and "3 checkpoints over 7 epochs" in three
    assert "a resume repeats up to 2 epoch(s)" in three
    assert "4 checkpoints over 7 epochs" in checkpoint_traffic(None, paths, 3, (1, 3))

    def total(line: str) -> str:
        return line.split("~")[1].split(" in all")[0]

    assert total(three) != total(one)


def test_checkpoint_every_is_a_run_option_of_the_cli_and_the_api() -> None:
    assert RunOptions(grid="g").checkpoint_every == 1
    with pytest.raises(ConfigError, match="--checkpoint-every"):
        RunOptions(grid="g", checkpoint_every=0).check()
    with pytest.raises(ConfigError, match="--checkpoint-every"):
        RunOptions(grid="g", checkpoint_every="3").check()
    assert "--checkpoint-every 3" in RunOptions(grid="g", checkpoint_every=3).as_command()
    from raygenre.sweep.cli import options, parser

    argv = ["batch_epoch", "--checkpoint-every", "4"]
    assert options(parser().parse_args(argv), argv).checkpoint_every == 4
    import inspect

    import raygenre

    assert inspect.signature(raygenre.run).parameters["checkpoint_every"].default == 1


# --- real sweeps (slow) ---------------------------------------------------------------------

GRID = """description: one trial standing for a 4- and an 8-epoch cell
judge_epoch: {judge}
metric: val/acc
asha: false
base: {{model: mlp, features: spectrogram, hidden: [16], lr: 0.003}}
grid:
  epochs: [4, 8]
"""


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _sweep(tmp: Path, cache: Path, name: str, judge: str, *extra: str) -> list[str]:
    (tmp / f"{name}.yaml").write_text(GRID.format(judge=judge))
    return [str(tmp / f"{name}.yaml"), "--cache", str(cache), "--results", str(tmp / "r"),
            "--storage", str(tmp / "s"), *extra]


def _judged(out: Path) -> list[dict]:
    """cells.csv without what names or times a run (ids, walls, nodes, folders)."""
    drop = ("cell_id", "trial_id", "wall_s", "train_s", "node", "checkpoint")
    return [{k: v for k, v in c.items() if k not in drop} for c in _rows(out / "cells.csv")]


def _tune_checkpoints(run: Path) -> list[int]:
    """The epochs of the checkpoints Tune holds for the run's one trial."""
    return sorted(read_meta(d)["metrics"]["epoch"] for d in run.glob("*_00000/checkpoint_*"))


@pytest.fixture(scope="module")
def every_epoch(smoke_run: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The grid judged at the best epoch, a checkpoint every epoch (k = 1): the reference of
    both slow tests (the history does not depend on where a cell is judged)."""
    folder = tmp_path_factory.mktemp("k1")
    proc = run_cli(_sweep(folder, smoke_run["base"] / "cache", "every", "best"), cwd=folder)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return folder / "r" / "every"


@pytest.mark.slow
def test_checkpoint_every_changes_no_number_a_sweep_reports(smoke_run: dict, every_epoch: Path,
                                                            tmp_path: Path) -> None:
    """Judged at the best epoch, one trial standing for two cells: with k = 3 the history,
    the judged epochs, their validation and test figures and the winner are those of k = 1
    (the best epochs and the shorter cell's were kept; the others were not written)."""
    proc = run_cli(_sweep(tmp_path, smoke_run["base"] / "cache", "every", "best",
                          "--checkpoint-every", "3"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "a resume repeats up to 2 epoch(s)" in proc.stdout
    outs = {1: every_epoch, 3: tmp_path / "r" / "every"}
    assert history_by_config(outs[3] / "history.csv") == \
        history_by_config(outs[1] / "history.csv")
    assert _judged(outs[3]) == _judged(outs[1])
    best = [json.loads((o / "best.json").read_text()) for o in (outs[1], outs[3])]
    assert {k: v for k, v in best[0].items() if k in ("epoch", "val/acc", "test/acc")} == \
        {k: v for k, v in best[1].items() if k in ("epoch", "val/acc", "test/acc")}


@pytest.mark.slow
def test_a_trial_killed_between_checkpoints_resumes_to_the_same_history(
        smoke_run: dict, every_epoch: Path, tmp_path: Path) -> None:
    """Judged at the last epoch, k = 3: checkpoints at 3, 4 (the shorter cell's), 6 and 8.
    Killed (driver and Ray) once epoch 5 is reported, resumed: the epochs after the latest
    checkpoint are trained again and the history equals an uninterrupted k = 1 run's."""
    args = _sweep(tmp_path, smoke_run["base"] / "cache", "every", "last",
                  "--checkpoint-every", "3")
    child = subprocess.Popen([sys.executable, "-m", "raygenre.grid", *args], cwd=tmp_path,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in child.stdout:  # type: ignore[union-attr]
            if "epoch 5/8" in line:
                break
        else:
            raise AssertionError("the sweep ended before epoch 5")
    finally:
        kill_tree(child.pid)
        child.wait()
    kept = _tune_checkpoints(tmp_path / "s" / "every")
    assert kept and set(kept) <= {3, 4, 6} and max(kept) < 8, kept
    resumed = run_cli([*args, "--resume"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert history_by_config(tmp_path / "r" / "every" / "history.csv") == \
        history_by_config(every_epoch / "history.csv")
    assert set(_tune_checkpoints(tmp_path / "s" / "every")) <= {3, 4, 6, 8}
