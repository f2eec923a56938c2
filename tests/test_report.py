"""The report's arithmetic on hand-made cases: checkpoint listings, member rows, the best
cell, the track vote, per-genre accuracy."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

from raygenre.grid.file import Grid
from raygenre.grid.objective import Objective
from raygenre.report.evaluate import scores, track_votes
from raygenre.report.records import (
    TrialRecord,
    best_of,
    cell_rows,
    pick_best,
    whole_checkpoints,
)
from raygenre.storage import Location
from raygenre.training.checkpoints import META_FILE, STATE_FILE

ACC = Objective("val/acc", "max", "best")  # early stopping: the rule these cases test
LAST = Objective("val/acc", "max", "last")


def _ckpt(run: Path, epoch: int, acc: float, state: bytes, recorded: int | None = None) -> None:
    d = run / f"epoch_{epoch:04d}"
    d.mkdir(parents=True)
    (d / STATE_FILE).write_bytes(state)
    (d / META_FILE).write_text(json.dumps({
        "metrics": {"epoch": epoch, "val/acc": acc},
        "history": [{"epoch": e} for e in range(1, epoch + 1)],
        "state_bytes": len(state) if recorded is None else recorded}))


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_cut_short_and_unseen_checkpoints_are_not_results(tmp_path: Path, as_uri: bool) -> None:
    """A data-parallel trial's Train checkpoints: ASHA stopped the trial after epoch 1 while
    epoch 2's upload was under way (seen in CI: a 20 MB piece of a 43 MB file), and a later
    epoch ran after Tune's last look. The same through a URI, as read from a bucket."""
    _ckpt(tmp_path, 1, 0.3, b"x" * 100)
    _ckpt(tmp_path, 2, 0.9, b"x" * 40, recorded=100)  # cut short
    _ckpt(tmp_path, 3, 0.8, b"x" * 100)  # finished after Tune's last report (epoch 1)
    run = Location.parse(f"file://{tmp_path}" if as_uri else tmp_path)
    assert best_of(whole_checkpoints(run), ACC).uri.startswith("file://" if as_uri else "/")
    assert [d.name for d, _ in whole_checkpoints(run)] == ["epoch_0001", "epoch_0003"]
    assert [d.name for d, _ in whole_checkpoints(run, max_epoch=1)] == ["epoch_0001"]
    assert best_of(whole_checkpoints(run, max_epoch=2), ACC).name == "epoch_0001"
    assert best_of(whole_checkpoints(run), ACC).name == "epoch_0003"
    assert best_of(whole_checkpoints(run), Objective("val/acc", "min", "best")).name == \
        "epoch_0001"


def _history(accs: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "val/acc": a, "val/loss": 1 - a, "train/loss": 1.0,
             "train/acc": 0.5, "train_s": 2.0 * (i + 1)} for i, a in enumerate(accs)]


def _grid(metric: str = "val/acc", mode: str = "max") -> Grid:
    return Grid(name="g", path=Path("g.yaml"), description="", metric=metric, mode=mode,
                axes={"batch_size": [16], "epochs": [2, 4, 6]})


def test_members_read_their_own_epochs_and_checkpoints() -> None:
    """A trial standing for 2-, 4- and 6-epoch cells: each member's numbers are the trial's
    first e epochs, judged at its best epoch among them (latest on a tie), tested at the
    trial's kept copy for it, or at the trial's best when it is the longest."""
    pins = Location("/runs/g/members/t0")
    rec = TrialRecord("t0", {"batch_size": 16, "epochs": 6}, None, [2, 4, 6],
                      _history([0.5, 0.6, 0.6, 0.55, 0.7, 0.4]), wall_s=30.0,
                      best=Location("/runs/g/t0/checkpoint_000004"), pins=pins)
    cells, history = cell_rows([rec], _grid(), ACC)
    by = {c["epochs"]: c for c in cells}
    assert [c["cell_id"] for c in cells] == ["t0:e2", "t0:e4", "t0:e6"]
    assert {e: (c["epoch"], c["status"], c["best_epoch"]) for e, c in by.items()} == {
        2: (2, "completed", 2), 4: (4, "completed", 3), 6: (6, "completed", 5)}
    assert by[4]["val/acc"] == 0.55 and by[4]["best/val/acc"] == 0.6
    assert by[2]["_checkpoint"] == pins / "epoch_0002"
    assert by[4]["_checkpoint"] == pins / "epoch_0003"  # the tie at 2-3 goes to the later
    assert by[6]["_checkpoint"] == rec.best
    assert by[4]["train_s"] == 8.0 and all(c["trial_id"] == "t0" for c in cells)
    assert [h["epoch"] for h in history if h["cell_id"] == "t0:e4"] == [1, 2, 3, 4]
    assert all("trial_id" not in h for h in history)  # history.csv: cell_id only


def test_a_trial_asha_stopped_marks_only_its_longer_members() -> None:
    rec = TrialRecord("t1", {"batch_size": 16, "epochs": 6}, None, [2, 4, 6],
                      _history([0.2, 0.3, 0.25]), best=Location("/b"), pins=Location("/p"))
    cells, _ = cell_rows([rec], _grid(), ACC)
    assert [(c["status"], c["epoch"]) for c in cells] == [
        ("completed", 2), ("stopped_early", 3), ("stopped_early", 3)]
    assert cells[1]["_checkpoint"] == Location("/b") == cells[2]["_checkpoint"]


def test_an_error_marks_the_members_it_cut_short() -> None:
    rec = TrialRecord("t2", {"batch_size": 16, "epochs": 6}, None, [2, 4, 6],
                      _history([0.2, 0.3, 0.25]), error="OOM", best=Location("/b"))
    cells, _ = cell_rows([rec], _grid(), ACC)
    assert [(c["status"], c["error"]) for c in cells] == [
        ("completed", ""), ("error", "OOM"), ("error", "OOM")]
    none, _ = cell_rows([TrialRecord("t3", {"epochs": 2}, None, [2], [], error="boom")],
                        _grid(), ACC)
    assert none[0]["status"] == "error" and none[0]["best/val/acc"] is None
    assert none[0]["cell_id"] == none[0]["trial_id"] == "t3"  # a cell alone: its trial's id


def test_by_default_a_cell_is_judged_and_tested_at_its_last_epoch() -> None:
    """`train N epochs` gives the model after epoch N: a 3-epoch cell whose validation falls
    later beats its own 10-epoch cell, though the 10-epoch one peaked higher on the way (early
    stopping, judged at the best epoch, would make the longer cell win by construction)."""
    rec = TrialRecord("t0", {"batch_size": 16, "epochs": 10}, None, [3, 10],
                      _history([0.5, 0.6, 0.72, 0.8, 0.7, 0.65, 0.62, 0.6, 0.6, 0.61]),
                      best=Location("/runs/g/t0/checkpoint_000003"),
                      latest=Location("/runs/g/t0/checkpoint_000009"),
                      pins=Location("/runs/g/members/t0"))
    grid = Grid(name="g", path=Path("g.yaml"), description="",
                axes={"batch_size": [16], "epochs": [3, 10]})
    assert grid.objective == LAST  # the default
    cells, _ = cell_rows([rec], grid, LAST)
    by = {c["epochs"]: c for c in cells}
    assert {e: (c["judged_epoch"], c["last/val/acc"]) for e, c in by.items()} == {
        3: (3, 0.72), 10: (10, 0.61)}
    assert by[10]["best/val/acc"] == 0.8 and by[10]["best_epoch"] == 4  # still shown
    assert by[3]["_checkpoint"] == Location("/runs/g/members/t0") / "epoch_0003"
    assert by[10]["_checkpoint"] == rec.latest  # not Tune's best (epoch 4)
    assert pick_best(cells, LAST)["cell_id"] == "t0:e3"
    assert all(c["judged_at"] == "last epoch" for c in cells)
    early, _ = cell_rows([rec], grid, ACC)
    assert pick_best(early, ACC)["cell_id"] == "t0:e10"  # 0.8 at epoch 4 of 10
    # A last epoch that diverged is what training gave: the cell has no value.
    nan = TrialRecord("t1", {"epochs": 3}, None, [3], _history([0.5, 0.6, float("nan")]))
    assert cell_rows([nan], grid, LAST)[0][0]["last/val/acc"] is None


def test_member_pins_keep_each_shorter_members_last_epoch() -> None:
    from raygenre.sweep.runners import MemberCheckpoints

    pins = MemberCheckpoints(Location("/nowhere"), [2, 4, 6], LAST)
    accs = [0.5, 0.6, 0.6, 0.55, 0.7, 0.4]
    want = [set(), {2}, {2}, {2, 4}, {2, 4}, {2, 4}]
    for e, keep in enumerate(want, start=1):
        assert pins.needed(_history(accs[:e])) == keep, e


def test_the_best_cell_follows_the_grids_metric_and_prefers_fewer_epochs_on_a_tie() -> None:
    trials = [TrialRecord("a", {"batch_size": 16, "epochs": 6}, None, [2, 4, 6],
                          _history([0.5, 0.7, 0.6, 0.6, 0.65, 0.7])),
              TrialRecord("b", {"batch_size": 32, "epochs": 6}, None, [6],
                          _history([0.4, 0.6, 0.69, 0.6, 0.6, 0.6]))]
    cells, _ = cell_rows(trials, _grid(), ACC)
    assert pick_best(cells, ACC)["cell_id"] == "a:e2"  # 0.7 at epoch 2 ties epoch 6's
    loss = Objective("val/loss", "min", "best")
    cells, _ = cell_rows(trials, _grid("val/loss", "min"), loss)
    best = pick_best(cells, loss)
    assert best["cell_id"] == "a:e2" and best["best/val/loss"] == pytest.approx(0.3)
    assert pick_best(cell_rows([TrialRecord("c", {"epochs": 1}, None, [1], [], error="x")],
                               _grid(), ACC)[0], ACC) is None


def test_track_vote_takes_the_majority_and_breaks_ties_by_probability() -> None:
    # Track t1: segments predict 0, 0, 1 -> 0. Track t2: 1 vs 2, a tie; class 2 has more
    # total probability -> 2. Track t3: one segment -> its argmax.
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.2, 0.8, 0.0],
                          [0.0, 0.51, 0.49], [0.0, 0.1, 0.9],
                          [0.3, 0.3, 0.4]])
    tracks = ["t1", "t1", "t1", "t2", "t2", "t3"]
    assert track_votes(probs, tracks) == {"t1": 0, "t2": 2, "t3": 2}
    labels = torch.tensor([0, 0, 0, 1, 1, 0])  # t1 genre a, t2 genre b, t3 genre a
    out = scores(probs, labels, tracks, ["a", "b", "c"])
    assert out["test/acc"] == pytest.approx(3 / 6)  # segments 0, 1, 3 right
    assert out["test/track_acc"] == pytest.approx(1 / 3)  # only t1
    assert out["per_genre"] == pytest.approx({"a": 2 / 4, "b": 1 / 2, "c": 0.0})
    assert out["confusion"] == [[2, 1, 1], [0, 1, 1], [0, 0, 0]]
    assert (out["n_segments"], out["n_tracks"]) == (6, 3)


def test_heatmap_over_a_list_valued_axis(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`hidden` x `lr`: list values are not hashable; the plot must still be drawn, with a
    stopped trial, an errored one and a missing cell said as such; the chosen square boxed,
    the square tied with it marked (found in the figure's patches and texts, not pixels)."""
    from matplotlib.patches import Rectangle

    from raygenre.report import plots
    from raygenre.report.plots import heatmap
    from raygenre.report.tables import fmt

    figures: list = []
    monkeypatch.setattr(plots.plt, "close", figures.append)  # kept open to be read

    grid = Grid(name="g", path=Path("g.yaml"), description="",
                axes={"hidden": [[16], [64, 64]], "lr": [0.01, 0.001]})
    cells = [
        {"hidden": [16], "lr": 0.01, "value": 0.5, "status": "completed", "epoch": 3,
         "tied": None, "chosen": True},
        {"hidden": [16], "lr": 0.001, "value": 0.4, "status": "stopped_early", "epoch": 1,
         "tied": True, "chosen": False},
        {"hidden": [64, 64], "lr": 0.01, "value": None, "status": "error", "epoch": 0,
         "tied": None, "chosen": False},
    ]
    assert heatmap(grid, ["hidden", "lr"], cells, tmp_path, "best/val/acc") == \
        "heatmap_val_acc.png"
    assert (tmp_path / "heatmap_val_acc.png").stat().st_size > 5_000
    (ax, *_), where = figures[0].axes, {}
    for axis, ticks in (("x", ax.get_xticklabels()), ("y", ax.get_yticklabels())):
        where.update({(axis, t.get_text()): k for k, t in enumerate(ticks)})
    square = {fmt(v): (where["x", fmt(v)], where["y", fmt([16])]) for v in (0.01, 0.001)}
    boxes = [(p.get_x() + 0.5, p.get_y() + 0.5) for p in ax.patches
             if isinstance(p, Rectangle) and not p.get_fill()]
    assert boxes == [square[fmt(0.01)]]  # the chosen square, and no other
    assert [t.get_position() for t in ax.texts if "≈" in t.get_text()] == [square[fmt(0.001)]]
    monkeypatch.undo()
    plots.plt.close(figures[0])


def test_member_pins_keep_what_a_shorter_member_will_be_tested_at() -> None:
    """Members of 2, 4 and 6 epochs: after each epoch, the checkpoints to keep are the best of
    each finished shorter member and the best so far while a shorter member is still ahead."""
    from raygenre.sweep.runners import MemberCheckpoints

    pins = MemberCheckpoints(Location("/nowhere"), [2, 4, 6], ACC)
    accs = [0.5, 0.6, 0.6, 0.55, 0.7, 0.4]
    want = [{1}, {2}, {2, 3}, {2, 3}, {2, 3}, {2, 3}]
    for e, keep in enumerate(want, start=1):
        assert pins.needed(_history(accs[:e])) == keep, e
    nan = MemberCheckpoints(Location("/nowhere"), [1, 3], ACC)
    assert nan.needed(_history([float("nan")])) == set()  # nothing finite to keep yet


def test_evaluate_uses_the_trials_arithmetic_and_restores_the_drivers(
        tmp_path: Path, builtin_small: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bf16 + TF32 trial's checkpoint is evaluated under bf16 autocast with TF32 allowed,
    on the device asked for; the driver's TF32 flags are as before afterwards; the scores are
    those of a plain forward pass in the same arithmetic."""
    from raygenre.config import PRESETS, Config
    from raygenre.data.prepared import read_split
    from raygenre.data.sets import prepare
    from raygenre.training.builder import Runtime, build
    from raygenre.training.checkpoints import save_checkpoint

    # The module, not the function that raygenre.report re-exports under the same name.
    ev = importlib.import_module("raygenre.report.evaluate")
    cfg = Config().replace(**PRESETS["cpu"], precision="bf16", tf32=True)
    prepared = prepare(builtin_small, tmp_path / "cache", cfg, log=lambda _: None)
    runtime = Runtime(len(prepared.genres), prepared.segment_samples)
    torch.manual_seed(0)
    feats, model = build(cfg, runtime)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_checkpoint(ckpt, cfg, runtime, {"epoch": 3}, [], {"model": model.state_dict()})

    seen = []
    load = ev.load_checkpoint

    def spying_load(path):
        f, m, meta = load(path)
        m.register_forward_hook(lambda *_: seen.append(
            (torch.is_autocast_enabled("cpu"), torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)))
        return f, m, meta

    monkeypatch.setattr(ev, "load_checkpoint", spying_load)
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        out = ev.evaluate(ckpt, prepared, device="cpu", reader="this test")
        after = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
    assert seen and all(s == (True, True, True) for s in seen), seen
    assert after == (False, False)
    assert out["epoch"] == 3

    table = read_split(prepared, "test")
    x = torch.tensor(table.column("x").to_pylist())
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        pred = model(feats(x)).float().argmax(1)
    labels = torch.tensor(table.column("label").to_pylist())
    assert out["test/acc"] == pytest.approx((pred == labels).float().mean().item())

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ev.eval_device().type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert ev.eval_device().type == "cuda"


def test_the_index_says_which_folders_were_judged_under_the_old_rule(tmp_path: Path) -> None:
    """results/best (made before the selection change, its run folder gone) is marked on the
    results page; the main job's folder, judged under today's rule, is not."""
    import shutil

    from raygenre.report import legacy
    from raygenre.report.index import write_index

    repo = Path(__file__).resolve().parent.parent
    for name in ("best", "batch_epoch"):
        shutil.copytree(repo / "results" / name, tmp_path / name)
    page = write_index(tmp_path).read_text()
    old, new = page.split('<h2 id="best">')[1], page.split('<h2 id="best">')[0]
    assert legacy.OLD_RULE.split(":")[0] in old
    assert legacy.OLD_RULE.split(":")[0] not in new and '<h2 id="batch_epoch">' in new
