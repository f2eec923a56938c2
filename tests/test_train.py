from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest
import torch

from raygenre.config import Config, ConfigError
from raygenre.training.builder import Runtime, build
from raygenre.training.checkpoints import META_FILE, STATE_FILE, load_checkpoint, read_meta
from raygenre.training.loop import EVAL_BATCH, LocalSeam, run_epoch, train_loop
from raygenre.training.scratch import SCRATCH_PREFIX, scratch_prefix


def test_runtime_facts_read_old_and_new_checkpoint_metas() -> None:
    """A meta written before Runtime was typed holds a plain dict, often without threads or
    band statistics; one written now holds every field. Both load; a meta missing a fact the
    model needs, or holding one nobody knows, is an error naming them."""
    old = Runtime.from_dict({"num_classes": 4, "segment_samples": 100})
    assert old == Runtime(num_classes=4, segment_samples=100)
    new = Runtime(4, 100, threads=2, band_stats={"k": {"mean": [0.0]}}, checkpoint_every=3)
    assert Runtime.from_dict(new.to_dict()) == new
    with pytest.raises(ConfigError, match="num_classes"):
        Runtime.from_dict({"segment_samples": 100}, "meta.json")
    with pytest.raises(ConfigError, match="colour"):
        Runtime.from_dict({"num_classes": 4, "segment_samples": 100, "colour": 1})
    with pytest.raises(ConfigError, match="checkpoint_every"):
        Runtime.from_dict({"num_classes": 4, "segment_samples": 100, "checkpoint_every": 0})


def test_run_epoch_learns_and_checkpoint_reloads(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = Config(model="mlp", features="waveform", hidden=(32,), lr=1e-2)
    rt = {"num_classes": 2, "segment_samples": 64}  # as checkpoints wrote it before Runtime
    feats, model = build(cfg, Runtime.from_dict(rt))
    x = torch.randn(64, 64)
    y = (x[:, 0] > 0).long()
    batches = [{"x": x[i:i + 16], "label": y[i:i + 16]} for i in range(0, 64, 16)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first, _ = run_epoch(model, feats, batches, torch.device("cpu"), opt)
    for _ in range(20):
        last, acc = run_epoch(model, feats, batches, torch.device("cpu"), opt)
    assert last < first and acc > 0.9
    torch.save({"model": model.state_dict()}, tmp_path / STATE_FILE)
    (tmp_path / META_FILE).write_text(json.dumps({"config": cfg.to_dict(), "runtime": rt,
                                                  "metrics": {"epoch": 21}}))
    _, again, meta = load_checkpoint(tmp_path)
    assert meta["metrics"]["epoch"] == 21
    model.eval()
    assert torch.equal(again(x), model(x))


def _data(n: int = 48, length: int = 64, classes: int = 3) -> dict:
    g = torch.Generator().manual_seed(1)
    out = {}
    for split, k in (("train", n), ("val", n // 2)):
        x = torch.randn(k, length, generator=g)
        out[split] = (x, (x[:, :classes].argmax(1)))
    return out


def _config(checkpoint_every: int = 1, **kw) -> tuple[Config, Runtime]:
    cfg = Config(model="mlp", features="waveform", hidden=(16,), lr=3e-3, batch_size=8,
                 dropout=0.2, **kw)
    return cfg, Runtime(num_classes=3, segment_samples=64, threads=1,
                        checkpoint_every=checkpoint_every)


def _weights(folder) -> dict:
    return torch.load(folder / STATE_FILE, weights_only=True)["model"]


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_a_resumed_loop_equals_an_uninterrupted_one_bit_for_bit(tmp_path, ema: float) -> None:
    """Stopped after epoch 2 of 4 and started again from its checkpoint (the RNG state of
    dropout included, and the weight average with ema), the loop reports the same numbers and
    ends with the same weights."""
    data = _data()
    whole = LocalSeam(data, tmp_path / "whole")
    train_loop(*_config(epochs=4, scheduler="plateau", ema=ema), whole)
    part = LocalSeam(data, tmp_path / "part")
    train_loop(*_config(epochs=2, scheduler="plateau", ema=ema), part)
    train_loop(*_config(epochs=4, scheduler="plateau", ema=ema), part)  # resumes at epoch 3
    strip = ("epoch_s", "train_s")
    assert [{k: v for k, v in r.items() if k not in strip} for r in whole.reports] == \
        [{k: v for k, v in r.items() if k not in strip} for r in part.reports]
    a, b = _weights(whole.folder / "epoch_0004"), _weights(part.folder / "epoch_0004")
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = torch.load(whole.folder / "epoch_0004" / STATE_FILE, weights_only=True)
    assert ("trained" in state) == bool(ema)
    meta = read_meta(part.folder / "epoch_0004")
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3, 4]


@pytest.mark.parametrize("scheduler, prefix", [("none", True), ("exponential", True),
                                               ("plateau", True), ("cosine", False)])
def test_a_shorter_cell_is_the_first_epochs_of_a_longer_one(tmp_path, scheduler: str,
                                                            prefix: bool) -> None:
    """What sharing a trial rests on: unless the schedule reads the epoch count, 2 epochs of a
    cell are the first 2 of its 4-epoch version; with cosine they are not."""
    data = _data()
    short, long = LocalSeam(data, tmp_path / "s"), LocalSeam(data, tmp_path / "l")
    train_loop(*_config(epochs=2, scheduler=scheduler), short)
    train_loop(*_config(epochs=4, scheduler=scheduler), long)
    same = [r["val/loss"] for r in short.reports] == [r["val/loss"] for r in long.reports[:2]]
    assert same == prefix
    a, b = _weights(short.folder / "epoch_0002"), _weights(long.folder / "epoch_0002")
    assert all(torch.equal(a[k], b[k]) for k in a) == prefix
    from raygenre.grid.resolved import reads_epochs

    assert reads_epochs(Config(scheduler=scheduler)) == (not prefix)


class _Probe(torch.nn.Module):
    """Records its inputs; its logits are its input (one-hot-like examples)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return x.flatten(1) + self.w


def test_spec_augment_masks_training_batches_only() -> None:
    from raygenre.data.features import SpecAugment

    torch.manual_seed(0)
    probe = _Probe()
    batches = [{"x": torch.ones(4, 1, 32, 40), "label": torch.zeros(4, dtype=torch.long)}]
    feats = torch.nn.Identity()
    opt = torch.optim.SGD(probe.parameters(), lr=0.0)
    run_epoch(probe, feats, batches, "cpu", opt, augment=SpecAugment())
    run_epoch(probe, feats, batches, "cpu", augment=SpecAugment())  # evaluation
    assert (probe.seen[0] == 0).any()
    assert (probe.seen[1] == 1).all()


@pytest.mark.parametrize("lam", [0.7, 0.3])
def test_mixup_mixes_the_loss_and_counts_the_dominant_label(monkeypatch, lam: float) -> None:
    """lam * CE(y) + (1 - lam) * CE(y[perm]), and a mixed example is right when it predicts
    the label that dominates it (y for lam >= 0.5, else y[perm])."""
    y = torch.tensor([0, 1, 2, 3])
    x = torch.nn.functional.one_hot(y, 4).float() * 5
    perm = torch.tensor([1, 2, 3, 0])
    monkeypatch.setattr(torch.distributions.Beta, "sample", lambda self: torch.tensor(lam))
    monkeypatch.setattr(torch, "randperm", lambda n, device=None: perm)
    probe = _Probe()
    loss, acc = run_epoch(probe, torch.nn.Identity(), [{"x": x, "label": y}], "cpu",
                          torch.optim.SGD(probe.parameters(), lr=0.0), mixup=0.2)
    logits = lam * x + (1 - lam) * x[perm]
    want = (lam * torch.nn.functional.cross_entropy(logits, y)
            + (1 - lam) * torch.nn.functional.cross_entropy(logits, y[perm]))
    assert loss == pytest.approx(want.item(), rel=1e-6)
    assert acc == 1.0  # argmax is the dominant label; counting y alone gives 0 at lam 0.3


def test_label_smoothing_changes_the_training_loss_only() -> None:
    y = torch.tensor([0, 1, 2, 3])
    x = torch.nn.functional.one_hot(y, 4).float() * 5
    probe = _Probe()
    batches = [{"x": x, "label": y}]
    sgd = torch.optim.SGD(probe.parameters(), lr=0.0)
    trained, _ = run_epoch(probe, torch.nn.Identity(), batches, "cpu", sgd, label_smoothing=0.1)
    judged, _ = run_epoch(probe, torch.nn.Identity(), batches, "cpu", label_smoothing=0.1)
    want = torch.nn.functional.cross_entropy(x, y, label_smoothing=0.1).item()
    assert trained == pytest.approx(want, rel=1e-6)
    assert judged == pytest.approx(torch.nn.functional.cross_entropy(x, y).item(), rel=1e-6)
    assert trained > judged  # smoothing penalises confident, right logits


def test_bf16_precision_runs_the_model_under_autocast(tmp_path) -> None:
    """`precision: bf16` changes the arithmetic (autocast on the device, the CPU here); the
    default fp32 is the bit-identical path."""
    data = _data()
    runs = {}
    for precision in ("fp32", "bf16", "fp32"):
        seam = LocalSeam(data, tmp_path / f"{precision}{len(runs)}")
        train_loop(*_config(epochs=1, precision=precision), seam)
        runs.setdefault(precision, []).append(seam.reports[0]["train/loss"])
    assert runs["fp32"][0] == runs["fp32"][1]
    assert runs["bf16"][0] != runs["fp32"][0]
    assert abs(runs["bf16"][0] - runs["fp32"][0]) < 0.05  # the same training, rounded


def test_weight_average_follows_the_weights_and_copies_integer_buffers() -> None:
    from raygenre.training.builder import WeightAverage

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    avg = WeightAverage(net, 0.75)
    start = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(4.0)
    net(torch.randn(8, 2))  # batch norm: running stats move, num_batches_tracked becomes 1
    avg.update(net)
    assert torch.allclose(avg.model[0].weight, start + 1.0)  # 0.75 * w + 0.25 * (w + 4)
    assert avg.model[1].num_batches_tracked.item() == 1
    assert not any(p.requires_grad for p in avg.model.parameters())


@pytest.mark.parametrize("ema", [0.0, 0.95])
def test_the_checkpoint_holds_the_weights_validation_judged(tmp_path, ema: float) -> None:
    """What a trial reports as val/acc is what its checkpoint's weights give on the val split
    (the average's, with ema): the test split is then scored with the weights that were chosen."""
    data = _data()
    seam = LocalSeam(data, tmp_path)
    train_loop(*_config(epochs=3, ema=ema), seam)
    feats, model, _ = load_checkpoint(tmp_path / "epoch_0003")
    loss, acc = run_epoch(model, feats, seam.batches("val", EVAL_BATCH, None), "cpu")
    assert acc == seam.reports[-1]["val/acc"]
    assert loss == pytest.approx(seam.reports[-1]["val/loss"], rel=1e-6)
    if ema:
        trained = torch.load(tmp_path / "epoch_0003" / STATE_FILE, weights_only=True)["trained"]
        averaged = _weights(tmp_path / "epoch_0003")
        assert any(not torch.equal(trained[k], averaged[k]) for k in trained)


def test_a_killed_writers_checkpoint_scratch_is_removed_when_the_next_loop_starts(
        tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # A process killed while it held a checkpoint's scratch folder, as a trial is killed by
    # kill -9 or the out-of-memory killer: its folder outlives it.
    child = subprocess.run(
        [sys.executable, "-c", "import os, signal, tempfile; "
         "from raygenre.training.scratch import scratch_prefix; "
         f"d = tempfile.mkdtemp(prefix=scratch_prefix(), dir={str(tmp_path)!r}); "
         "open(os.path.join(d, 'state.pt'), 'wb').write(b'0' * 1000); "
         "os.kill(os.getpid(), signal.SIGKILL)"], check=False)
    assert child.returncode == -9
    (orphan,) = tmp_path.glob(f"{SCRATCH_PREFIX}*")
    live = tmp_path / f"{scratch_prefix()}live"  # a running trial's, say
    live.mkdir()
    # A dead pid of another pid namespace (another container sharing /tmp): not ours to judge.
    elsewhere = tmp_path / f"{SCRATCH_PREFIX}1.{orphan.name.split('.', 1)[1]}"
    elsewhere.mkdir()
    other = tmp_path / "someone-elses"
    other.mkdir()

    class Watching(LocalSeam):
        scratch: list = []

        def report(self, metrics, checkpoint) -> None:
            self.scratch.append(checkpoint)
            super().report(metrics, checkpoint)

    seam = Watching(_data(), tmp_path / "ckpt")
    train_loop(*_config(epochs=2), seam)
    assert not orphan.exists()
    assert live.exists() and elsewhere.exists() and other.exists()
    # The loop's own scratch names its writer and is gone once the epoch is reported.
    assert [c.name.startswith(scratch_prefix()) for c in seam.scratch] == [True, True]
    assert not any(c.exists() for c in seam.scratch)
    assert sorted(tmp_path.glob(f"{SCRATCH_PREFIX}*")) == sorted([live, elsewhere])


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0,
                    reason="giving a folder to another user takes root")
def test_another_users_orphaned_scratch_is_left_to_them(tmp_path) -> None:
    from raygenre.training.scratch import remove_orphaned_scratch

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    mine = tmp_path / f"{scratch_prefix(gone.pid)}a"
    theirs = tmp_path / f"{scratch_prefix(gone.pid)}b"
    mine.mkdir()
    theirs.mkdir()
    os.chown(theirs, 12345, 12345)
    assert remove_orphaned_scratch(tmp_path) == [mine]
    assert theirs.exists() and not mine.exists()


def _music_like(n_train: int = 36, n_val: int = 20, samples: int = 44100) -> dict:
    """Noise segments of 2 s at 22 050 Hz: enough frames (44 at the CPU preset's hop) for
    small_cnn, the semitone bands and SpecAugment's masks."""
    g = torch.Generator().manual_seed(2)
    return {split: (torch.randn(n, samples, generator=g) * 0.1,
                    torch.randint(0, 4, (n,), generator=g))
            for split, n in (("train", n_train), ("val", n_val))}


def _small_cnn(**kw) -> tuple[Config, Runtime]:
    """grids/best.yaml's small_cnn recipe (the CPU preset), shrunk to a test's size."""
    from raygenre.config import PRESETS
    from raygenre.data.features import band_stats, feature_key

    cfg = Config().replace(**PRESETS["cpu"]).replace(**{
        "model": "small_cnn", "features": "semitone", "pitch_shift": 2, "band_norm": True,
        "spec_augment": True, "mixup": 0.2, "label_smoothing": 0.1, "optimizer": "adam",
        "lr": 0.003, "weight_decay": 0.0001, "scheduler": "cosine", "epochs": 3,
        "batch_size": 8, **kw})
    stats = band_stats(cfg, [_music_like()["train"][0]])
    return cfg, Runtime(num_classes=4, segment_samples=44100, threads=1,
                        band_stats={feature_key(cfg): stats})


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("features", ["semitone", "logmel", "spectrogram"])
def test_held_features_are_the_per_batch_features_bit_for_bit(features: str,
                                                              threads: int) -> None:
    """Every batch the loop reads from held features is, bit for bit, what computing the batch
    from its waveforms gives: shuffled train batches of 8 (30 rows: the pass's tail is topped
    up to 8, each epoch's short last batch is computed) and validation's own batches."""
    from raygenre.training.loop import HeldFeatures

    cfg, rt = _small_cnn(features=features, pitch_shift=0)
    feats, _ = build(cfg, rt)
    seam = LocalSeam(_music_like(n_train=30, n_val=30), tempfile.gettempdir())
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for split, size, shuffled, seeds in (("train", 8, True, [0, 1, 2]),
                                             ("val", 16, False, [None])):
            held = HeldFeatures.compute(feats, seam.batches(split, size, None), size, shuffled,
                                        torch.device("cpu"), 2**30)
            assert held is not None and held.x.shape == (30, *feats(torch.zeros(1, 44100)
                                                                    ).shape[1:])
            assert held.size.tolist() == ([8] * 30 if shuffled else [16] * 16 + [14] * 14)
            for seed in seeds:
                ours = list(held.batches(seam.batches(split, size, seed), feats, "cpu"))
                theirs = list(seam.batches(split, size, seed))
                assert len(ours) == len(theirs)
                for a, b in zip(ours, theirs, strict=True):
                    with torch.no_grad():
                        assert torch.equal(a["x"], feats(b["x"]))
                    assert torch.equal(a["label"], b["label"])
    finally:
        torch.set_num_threads(before)


class _Stopped(Exception):
    pass


class _StopsAfter(LocalSeam):
    """A trial killed once epoch `stop` is reported (and checkpointed)."""

    def __init__(self, data: dict, folder, stop: int) -> None:
        super().__init__(data, folder)
        self.stop = stop

    def report(self, metrics, checkpoint) -> None:
        super().report(metrics, checkpoint)
        if metrics["epoch"] == self.stop:
            raise _Stopped


def test_a_loop_on_held_features_gives_the_per_batch_loops_numbers_and_resumes_exactly(
        tmp_path, monkeypatch) -> None:
    """best.yaml's small_cnn recipe (semitone, band norm, pitch shifts, SpecAugment, mixup,
    label smoothing, cosine), 3 epochs three ways: features computed every batch (the loop
    before #26: no memory for held features), held, and held but killed after epoch 1 and
    resumed. Same metrics, same validation predictions, same weights, bit for bit."""
    from raygenre.training import loop as train

    cfg, rt = _small_cnn()
    data = _music_like()
    held, hold = [], train.hold_features

    def spy(*args):  # noqa: ANN002, ANN202
        held.append(hold(*args))
        return held[-1]

    monkeypatch.setattr(train, "hold_features", spy)
    seams = {}
    for name, budget in (("per_batch", 0), ("held", train.FEATURE_CACHE_BYTES)):
        monkeypatch.setattr(train, "FEATURE_CACHE_BYTES", budget)
        seams[name] = LocalSeam(data, tmp_path / name)
        train_loop(cfg, rt, seams[name])
    with pytest.raises(_Stopped):
        train_loop(cfg, rt, _StopsAfter(data, tmp_path / "resumed", stop=1))
    seams["resumed"] = LocalSeam(data, tmp_path / "resumed")
    train_loop(cfg, rt, seams["resumed"])  # epochs 2 and 3, from epoch 1's checkpoint
    assert [sorted(h) for h in held] == [[], ["train", "val"], ["train", "val"],
                                          ["train", "val"]]

    strip = ("epoch_s", "train_s")
    reports = {k: [{m: v for m, v in r.items() if m not in strip} for r in s.reports]
               for k, s in seams.items()}
    assert reports["held"] == reports["per_batch"]
    assert reports["resumed"] == reports["per_batch"][1:]
    last = {k: s.folder / "epoch_0003" for k, s in seams.items()}
    for k in ("held", "resumed"):
        a, b = _weights(last["per_batch"]), _weights(last[k])
        assert all(torch.equal(a[n], b[n]) for n in a)
        assert (last[k] / "val_predictions.npz").read_bytes() == \
            (last["per_batch"] / "val_predictions.npz").read_bytes()


def test_features_are_held_only_where_fixed_per_segment_numbered_and_within_budget(
        monkeypatch) -> None:
    from raygenre.training import loop as train
    from raygenre.training.loop import hold_features

    data = _music_like()
    splits = {"train": (8, True), "val": (EVAL_BATCH, False)}
    cfg, rt = _small_cnn()
    feats, _ = build(cfg, rt)
    seam = LocalSeam(data, tempfile.gettempdir())
    assert sorted(hold_features(cfg, feats, seam, splits)) == ["train", "val"]

    class Unnumbered(LocalSeam):  # as a data-parallel worker's Ray Data shard
        numbered_rows = False

    assert hold_features(cfg, feats, Unnumbered(data, tempfile.gettempdir()), splits) == {}
    wave = Config(model="mlp", features="waveform", hidden=(8,))
    assert hold_features(wave, build(wave, rt)[0], seam, splits) == {}
    # Room for validation's 20 rows, not for train's 36: train is computed per batch.
    row = feats(torch.zeros(1, 44100)).nbytes
    monkeypatch.setattr(train, "FEATURE_CACHE_BYTES", 20 * row)
    assert sorted(hold_features(cfg, feats, seam, splits)) == ["val"]
