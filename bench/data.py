"""Data: preparation throughput, the cache's second run, and input against model at train time.

1. Preparation (`raygenre.data.sets.prepare`: decode, resample, cut, write the Arrow files) of the
   built-in set into an empty cache, in segments per second; the same again from the cache; and the
   stages timed alone on the same files (decode; resample from 44.1 kHz, as a CD-rate copy of
   your own data needs; spectrogram at both presets, which the trainer computes per batch).
2. Training-time input: batches per second to the model (a one-worker trial's `HeldSplit`, and
   Ray Data's `iter_torch_batches` as a data-parallel worker reads them, both with the trainer's
   shuffle, plus the on-worker spectrogram) against the model's own step (forward, backward,
   Adam) per batch, for CNN1 at both presets and the best grid's model.
   Whichever is slower limits an epoch.

    python bench/data.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import soundfile as sf
import torch
import torchaudio
from _common import report

from raygenre.config import PRESETS, Config
from raygenre.data import synth
from raygenre.data.audio import discover, segment
from raygenre.data.features import build_features
from raygenre.data.prepared import BlockWriter, block_rows
from raygenre.data.sets import prepare
from raygenre.paths import default_cache
from raygenre.sweep.feed import HeldSplit, ray_dataset, torch_batches
from raygenre.training.builder import Runtime, build_training
from raygenre.training.loop import train_epoch

BATCH = 32


def timed(fn, *a, **k) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*a, **k)
    return time.perf_counter() - t0, out


def stages(root: Path, cfg: Config) -> dict[str, float]:
    """Seconds per segment for each preparation stage, timed alone."""
    tracks, _ = discover(root)
    seg_len = int(cfg.segment_seconds * cfg.sample_rate)
    t_dec, waves = timed(lambda: [sf.read(str(t.path), dtype="float32")[0] for t in tracks])
    segs = np.concatenate([segment(w, seg_len) for w in waves])
    n = len(segs)
    few = waves[:20]  # 44.1 kHz copies of a few tracks, resampled back as prepare would
    hi = [torchaudio.functional.resample(torch.from_numpy(w), cfg.sample_rate, 44_100)
          for w in few]
    t_res, _ = timed(lambda: [torchaudio.functional.resample(h, 44_100, cfg.sample_rate)
                              for h in hi])
    n_few = sum(len(w) // seg_len for w in few)
    out = {"decode": t_dec / n, "resample 44.1k": t_res / n_few}
    x = torch.from_numpy(segs)
    for preset in ("cpu", "study"):
        spec = build_features(cfg.replace(**PRESETS[preset], features="spectrogram"))
        with torch.no_grad():
            t, _ = timed(lambda s=spec: [s(x[i:i + 64]) for i in range(0, n, 64)])
        out[f"spectrogram ({preset})"] = t / n
    with tempfile.TemporaryDirectory() as d:
        table = pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(segs.ravel()), seg_len),
                          "label": pa.array(np.zeros(n, dtype=np.int64))})
        def write(path: Path) -> None:  # prepare's own writer, in its blocks
            w = BlockWriter(path, table.schema, block_rows(seg_len))
            w.write(table)
            w.close()

        t, _ = timed(write, Path(d) / "x.arrow")
        out["write Arrow file"] = t / n
    return out


def input_vs_model(prepared, cfg: Config) -> tuple[float, float, float]:
    """(input batches/s as a one-worker trial reads them, the same through Ray Data's iterator
    as a data-parallel worker reads them, model steps/s) for this config."""
    ds = ray_dataset(prepared, "train")
    feats = build_features(cfg)

    def rate(batches) -> float:
        with torch.no_grad():
            n, t0 = 0, None
            for b in batches:
                feats(b["x"])
                n += 1
                if n == 2:  # after the iterator's start-up
                    t0 = time.perf_counter()
            return (n - 2) / (time.perf_counter() - t0)

    held_rate = rate(HeldSplit(ds).batches(BATCH, 0))
    input_rate = rate(torch_batches(ds, BATCH, 0))
    del ds  # its blocks leave the object store with it
    # A trial's own training step (the loop's set-up and pass) on one batch of features.
    training = build_training(cfg, Runtime(10, prepared.segment_samples), "cpu")
    with torch.no_grad():
        x = training.feats(torch.randn(BATCH, prepared.segment_samples) * 0.1)
    batch = [{"x": x, "label": torch.randint(0, 10, (BATCH,))}]
    steps = 2 if cfg.n_fft == Config().n_fft and cfg.model == "cnn1" else 10
    t0 = time.perf_counter()
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        train_epoch(training, batch, torch.nn.Identity())
    return held_rate, input_rate, steps / (time.perf_counter() - t0)


def main() -> None:
    import ray

    torch.set_num_threads(1)  # as one trial on this machine
    cache = default_cache()
    root = synth.ensure_builtin(cache)
    cfg = Config()
    with tempfile.TemporaryDirectory(prefix="bench_data_") as d:
        t_cold, prepared = timed(prepare, root, d, cfg, log=lambda s: None)
        t_warm, again = timed(prepare, root, d, cfg, log=lambda s: None)
        assert again.reused and not prepared.reused
    n = sum(prepared.counts.values())
    per_stage = stages(root, cfg)
    print(f"prepare: {n} segments in {t_cold:.2f} s cold, {t_warm:.3f} s from the cache")

    prepared = prepare(root, cache, cfg, log=lambda s: None)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    rates = {}
    for label, c in [
        ("CNN1, CPU preset (64x108)", cfg.replace(**PRESETS["cpu"], model="cnn1",
                                                  features="spectrogram")),
        ("CNN1, study preset (201x552)", cfg.replace(model="cnn1", features="spectrogram")),
        ("small_cnn, log-mel (best grid)", cfg.replace(model="small_cnn", features="logmel")),
    ]:
        rates[label] = input_vs_model(prepared, c)
        print(f"{label}: input {rates[label][0]:.1f} batches/s (Ray Data's iterator "
              f"{rates[label][1]:.1f}), model {rates[label][2]:.2f} steps/s", flush=True)
    ray.shutdown()

    body = [f"Built-in set: {len(discover(root)[0])} WAV tracks at 22.05 kHz, {n} segments of "
            "5 s; one torch thread, as one trial on this machine.", "",
            "## Preparation", "",
            "| | seconds | segments/s |", "|---|---:|---:|",
            f"| `prepare`, empty cache | {t_cold:.2f} | {n / t_cold:.0f} |",
            f"| `prepare`, same files again (cache) | {t_warm:.3f} | |", "",
            "Stages alone, milliseconds per segment (prepare decodes each file twice: once to "
            "set unusable files aside before the split is drawn, once to write):", "",
            "| stage | ms/segment |", "|---|---:|",
            *[f"| {k} | {v * 1e3:.2f} |" for k, v in per_stage.items()], "",
            "The spectrogram is not stored: trials compute it per batch (see "
            "feature_storage.md for why).", "",
            f"## Training-time input, batch {BATCH}", "",
            "Input: the train split's shuffled batches plus the spectrogram, as a one-worker "
            "trial reads them (`HeldSplit`, in place from the object store) and through Ray "
            "Data's `iter_torch_batches` (a data-parallel trial's workers; the same batches).",
            "",
            "| model | input batches/s, one-worker trial | input batches/s, Ray Data iterator "
            "| model steps/s | limited by |",
            "|---|---:|---:|---:|---|",
            *[f"| {k} | {i:.1f} | {r:.1f} | {m:.2f} | {'input' if i < m else 'model'} "
              f"({max(i, m) / min(i, m):.0f}x) |" for k, (i, r, m) in rates.items()]]
    input_share = {k: m / i for k, (i, _, m) in rates.items()}
    report("data", "Data: preparation, cache, and input against model", body, {
        "prep_segments_per_s": f"{n / t_cold:.0f}",
        "cache_speedup": f"{t_cold / t_warm:.0f}",
        "input_over_model_rate_cnn1_cpu": f"{1 / input_share['CNN1, CPU preset (64x108)']:.1f}",
    })


if __name__ == "__main__":
    sys.exit(main())
