"""Where an epoch of `best`'s small_cnn goes on this machine, and what holding features saves.

small_cnn (grids/best.yaml: semitone bands with band norm, pitch shifts, SpecAugment, mixup,
label smoothing, Adam, cosine; the CPU preset, batch 32) on the built-in synthetic set's
prepared splits (`builtin`; `best` itself runs on builtin:music, whose 1 812 train segments this
bench does not render: per-row figures scale to it), one torch thread as a trial gets here.

1. One training epoch and one validation pass, timed phase by phase: reading the batch, the
   features (STFT, semitone filterbank, dB, band norm), augmentation (pitch shift,
   SpecAugment), mixup + forward + loss, backward, optimizer step; and what a batch costs when
   its features are held (`train.HeldFeatures`: one gather).
2. `train.train_loop` end to end, EPOCHS epochs each way, in this one process: features
   computed per batch (the loop before #26, `FEATURE_CACHE_BYTES = 0`) and held; their metrics
   must be identical, bit for bit.
Times are this process's CPU seconds (one torch thread): on a machine shared with other work
they stay near the work done where wall time does not.

    python bench/epoch_cost.py [--epochs 4] [--rows N]   (N: the first N train rows; default all)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from _common import report

from raygenre.config import Config
from raygenre.data import synth
from raygenre.data.features import band_stats, feature_key
from raygenre.data.prepared import read_split, to_tensor
from raygenre.data.sets import prepare
from raygenre.grid.file import load_grid
from raygenre.grid.resolved import resolve_base
from raygenre.paths import default_cache
from raygenre.training import loop as train
from raygenre.training.builder import Runtime, build_training
from raygenre.training.loop import EVAL_BATCH, HeldFeatures, LocalSeam, run_epoch, train_epoch

MUSIC_TRAIN, MUSIC_VAL = 1812, 240  # builtin:music's splits, for the per-row scale-up


def small_cnn() -> Config:
    grid = load_grid("best")
    base = resolve_base(grid, "cpu", None)
    (cell,) = [c for c in grid.cells() if c.variant == "small_cnn"
               and c.deltas.get("seed", 0) == 0]
    return base.replace(**cell.deltas)


class Phases:
    """CPU seconds per phase of the loop's own passes, split where the loop calls out: the
    batches it reads, the feature modules' and the augmentation's forward hooks, the model's
    backward (a full backward pre-hook: the forward, mixup and loss are done) and the
    optimizer's step (a step pre-hook: the backward is done). Each `lap` gives the time since
    the last one to a phase; the loop's arithmetic is untouched, so its numbers are the loop's."""

    def __init__(self) -> None:
        self.t: dict[str, float] = defaultdict(float)
        self.validating = False
        self.mark = time.process_time()

    def lap(self, phase: str) -> None:
        now = time.process_time()
        if self.validating:  # validation's own columns: its features, its forward, the rest
            phase = {"model forward": "validation: forward"}.get(
                phase, "validation: features" if phase.startswith("features") else
                "validation: other")
        self.t[phase] += now - self.mark
        self.mark = now

    def hook(self, phase: str) -> Callable[..., None]:
        return lambda *_: self.lap(phase)

    def batches(self, batches: Iterable[dict]) -> Iterator[dict]:
        """`batches`, the time spent fetching each one as "read batch", and what ran since the
        optimizer's step began (the step, the loss and accuracy tallies) as "optimizer step"."""
        it = iter(batches)
        while True:
            self.lap("optimizer step")
            try:
                batch = next(it)
            except StopIteration:
                return
            self.lap("read batch")
            yield batch


def phases(cfg: Config, runtime: Runtime, seam: LocalSeam) -> dict[str, float]:
    """Seconds per phase over one training epoch and one validation pass of the loop's own
    set-up and passes (`build_training`, `train_epoch`, `run_epoch`), features per batch."""
    training = build_training(cfg, runtime, "cpu")
    semitone, norm = training.feats[0], training.feats[1]
    p = Phases()
    hooks = [semitone.register_forward_pre_hook(p.hook("read batch")),
             semitone.spec.register_forward_hook(p.hook("features: STFT")),
             semitone.db.register_forward_pre_hook(p.hook("features: semitone filterbank")),
             semitone.db.register_forward_hook(p.hook("features: dB")),
             norm.register_forward_hook(p.hook("features: band norm")),
             training.augment.register_forward_hook(
                 p.hook("augment: pitch shift + SpecAugment")),
             training.model.register_full_backward_pre_hook(
                 p.hook("model: mixup + forward + loss")),
             training.opt.register_step_pre_hook(p.hook("model: backward"))]
    p.mark = time.process_time()
    train_epoch(training, p.batches(seam.batches("train", cfg.batch_size, 1)))
    p.validating = True
    hooks += [training.judged.register_forward_pre_hook(p.hook("validation: other")),
              training.judged.register_forward_hook(p.hook("model forward"))]
    t0 = p.mark = time.process_time()
    run_epoch(training.judged, training.feats, seam.batches("val", EVAL_BATCH, None),
              training.device, precision=cfg.precision, outputs=[])
    order = ["read batch", "features: STFT", "features: semitone filterbank", "features: dB",
             "features: band norm", "augment: pitch shift + SpecAugment",
             "model: mixup + forward + loss", "model: backward", "optimizer step"]
    t = {k: p.t[k] for k in sorted(p.t, key=lambda k: order.index(k) if k in order else 99)}
    t["validation: total"] = time.process_time() - t0
    for h in hooks:
        h.remove()
    # What a held batch costs instead of its features: one gather (the loop's lookup path).
    clock = time.process_time
    t0 = clock()
    held = HeldFeatures.compute(training.feats, seam.batches("train", cfg.batch_size, None),
                                cfg.batch_size, True, torch.device("cpu"), 2**31)
    t["held: the one pass (per trial)"] = clock() - t0
    assert held is not None
    t0 = clock()
    for _ in held.batches(seam.batches("train", cfg.batch_size, 1), training.feats, "cpu"):
        pass
    t["held: read batch + gather (per epoch)"] = clock() - t0
    t["held bytes (train)"] = held.x.nbytes
    return t


class Timed(LocalSeam):
    """A LocalSeam that adds each epoch's CPU seconds ("cpu_s") to its report."""

    def report(self, metrics: dict, checkpoint: Path | None) -> None:
        now = time.process_time()
        super().report({**metrics, "cpu_s": now - self.mark}, checkpoint)
        self.mark = time.process_time()  # the checkpoint's copy is the seam's, not the loop's


def loop(cfg: Config, runtime: Runtime, data: dict, budget: int) -> list[dict]:
    train.FEATURE_CACHE_BYTES = budget
    with tempfile.TemporaryDirectory() as d:
        seam = Timed(data, Path(d))
        seam.mark = time.process_time()
        train.train_loop(cfg, runtime, seam)
    return seam.reports


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=4, help="epochs of each end-to-end run")
    ap.add_argument("--rows", type=int, default=None, help="the first N train rows only")
    args = ap.parse_args()
    torch.set_num_threads(1)  # as a trial runs on a 2-core machine (2 trials at once)
    cfg = small_cnn().replace(epochs=args.epochs)
    cache = default_cache()
    prepared = prepare(synth.ensure_builtin(cache), cache, cfg, log=lambda s: None)
    data = {}
    for split in ("train", "val"):
        table = read_split(prepared, split)
        x, y = to_tensor(table.column("x")), torch.tensor(table.column("label").to_numpy())
        n = args.rows if split == "train" and args.rows else len(y)
        data[split] = (x[:n], y[:n])
    n_train, n_val = len(data["train"][1]), len(data["val"][1])
    runtime = Runtime(len(prepared.genres), prepared.segment_samples, threads=1,
                      band_stats={feature_key(cfg): band_stats(
                          cfg, (data["train"][0][i:i + 64] for i in range(0, n_train, 64)))})
    seam = LocalSeam(data, Path(tempfile.gettempdir()))
    where = (f"data: the built-in synthetic set (`builtin`, {prepared.path.name}): {n_train} "
             f"train, {n_val} val segments of {prepared.segment_samples} samples "
             f"(5 s at 22 050 Hz); config: grids/best.yaml's small_cnn, preset cpu, batch "
             f"{cfg.batch_size}, 1 torch thread")
    print(where, flush=True)

    print("1. one epoch, phase by phase", flush=True)
    t = phases(cfg, runtime, seam)
    train_keys = [k for k in t if not k.startswith(("validation", "held"))]
    feature_keys = [k for k in train_keys if k.startswith("features")]
    train_s = sum(t[k] for k in train_keys)
    epoch_s = train_s + t["validation: total"]
    rows = ["| phase | CPU s per epoch | share of the epoch |", "|---|---:|---:|"]
    for k in [*train_keys, "validation: features", "validation: forward"]:
        rows.append(f"| {k} | {t[k]:.2f} | {t[k] / epoch_s:.3f} |")
        print(f"  {k:38s} {t[k]:7.2f} s  {t[k] / epoch_s:6.1%}", flush=True)
    rows.append(f"| **epoch** (train + validation) | {epoch_s:.2f} | 1 |")
    features_s = sum(t[k] for k in feature_keys) + t["validation: features"]
    held_epoch_s = (epoch_s - features_s - t["read batch"]
                    + t["held: read batch + gather (per epoch)"])
    rows += ["", f"Held features instead: the train pass once per trial "
             f"{t['held: the one pass (per trial)']:.2f} s, then per epoch reading the batches "
             f"and gathering their features {t['held: read batch + gather (per epoch)']:.2f} s "
             f"in place of {t['read batch'] + sum(t[k] for k in feature_keys):.2f} s; "
             f"an epoch by these phases {epoch_s:.2f} s -> {held_epoch_s:.2f} s. Held train "
             f"features take {t['held bytes (train)'] / 2**20:.1f} MiB here, "
             f"{t['held bytes (train)'] / n_train * MUSIC_TRAIN / 2**20:.1f} MiB for "
             f"builtin:music's {MUSIC_TRAIN} segments ({MUSIC_TRAIN} x 84 bands x 108 "
             f"frames x 4 bytes) plus {t['held bytes (train)'] / n_train * MUSIC_VAL / 2**20:.1f}"
             f" MiB of validation."]

    print(f"2. train_loop, {args.epochs} epochs per batch and held", flush=True)
    runs = {}
    for name, budget in (("per batch", 0), ("held", 2 * 2**30)):
        runs[name] = loop(cfg, runtime, data, budget)
        print(f"  {name}: CPU s {[round(r['cpu_s'], 2) for r in runs[name]]}, wall epoch_s "
              f"{[round(r['epoch_s'], 2) for r in runs[name]]}", flush=True)
    strip = ("epoch_s", "train_s", "cpu_s")
    same = ([{k: v for k, v in r.items() if k not in strip} for r in runs["per batch"]]
            == [{k: v for k, v in r.items() if k not in strip} for r in runs["held"]])
    print(f"  metrics identical: {same}", flush=True)
    if not same:
        raise SystemExit("held features changed the numbers")

    def later(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name][1:])

    rows += ["", f"`train_loop` end to end, {args.epochs} epochs each way in this process. "
             f"CPU s: this process's CPU time per epoch (one torch thread), which other "
             f"processes on this shared 2-core machine do not inflate as they do the wall "
             f"time a trial reports (`epoch_s`, shown beside it). The held run's epoch 1 "
             f"includes its one features pass (and both runs' epoch 1 the loop's set-up). "
             f"Metrics of every epoch identical, bit for bit: {same}.", "",
             "| path | epoch 1 CPU s | later epochs CPU s (median) | later epochs wall s "
             "(median) | all epochs CPU s |", "|---|---:|---:|---:|---:|"]
    rows += [f"| {k} | {v[0]['cpu_s']:.2f} | {later(k, 'cpu_s'):.2f} | "
             f"{later(k, 'epoch_s'):.2f} | {sum(r['cpu_s'] for r in v):.2f} |"
             for k, v in runs.items()]
    ratio = later("held", "cpu_s") / later("per batch", "cpu_s")
    scale = (MUSIC_TRAIN + MUSIC_VAL) / (n_train + n_val)
    rows += ["", f"Scaled by rows to builtin:music ({MUSIC_TRAIN} + {MUSIC_VAL} segments), an "
             f"80-epoch seed would take about "
             f"{later('per batch', 'cpu_s') * scale * 80 / 60:.0f} CPU min per batch and "
             f"{later('held', 'cpu_s') * scale * 80 / 60:.0f} held (a projection from this "
             f"run's later epochs, not a measured seed)."]
    figures = {
        "data": "builtin",
        "train_rows": n_train,
        "phase_epoch_cpu_s": round(epoch_s, 2),
        "features_share": round(features_s / epoch_s, 3),
        "augment_share": round(t["augment: pitch shift + SpecAugment"] / epoch_s, 3),
        "model_share": round(sum(t[k] for k in train_keys if k.startswith("model"))
                             / epoch_s, 3),
        "optimizer_share": round(t["optimizer step"] / epoch_s, 3),
        "validation_share": round(t["validation: total"] / epoch_s, 3),
        "per_batch_epoch_cpu_s": round(later("per batch", "cpu_s"), 2),
        "held_epoch_cpu_s": round(later("held", "cpu_s"), 2),
        "held_over_per_batch": round(ratio, 3),
        "metrics_identical": str(same).lower(),
    }
    report("epoch_cost", "epoch cost: where a small_cnn epoch goes, features per batch vs held",
           [where, "", "1. One epoch, phase by phase (per batch, as before #26), in CPU "
            "seconds:", "", *rows],
           figures)


if __name__ == "__main__":
    main()
