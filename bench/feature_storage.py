"""Store spectrograms, or store waveforms and compute spectrograms on the worker?

For the built-in train split, one epoch of input through Ray Data (`iter_torch_batches`, batch
32, as the trainer reads it) two ways:
  A. waveforms stored, spectrogram computed per batch on the worker (what raygenre does);
  B. spectrograms precomputed and stored (preparation cost reported separately).
and, for scale, CNN1's own training step over the same rows. Prints `RESULT` lines and writes
results/bench/feature_storage.md.

    python bench/feature_storage.py
"""

from __future__ import annotations

import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import ray
import torch

from raygenre.config import PRESETS, Config
from raygenre.data import synth
from raygenre.data.features import build_features, feature_shape
from raygenre.data.sets import prepare
from raygenre.paths import default_cache
from raygenre.sweep.feed import ray_dataset
from raygenre.training.builder import Runtime, build_training
from raygenre.training.loop import train_epoch

BATCH = 32


def one_pass(ds: ray.data.Dataset, fn=None) -> tuple[float, int]:
    t0, n = time.perf_counter(), 0
    for b in ds.iter_torch_batches(batch_size=BATCH, local_shuffle_buffer_size=512,
                                   local_shuffle_seed=0):
        x = fn(b["x"]) if fn else b["x"]
        n += len(x)
    return time.perf_counter() - t0, n


def model_pass(cfg: Config, n_samples: int, rows: int) -> float:
    """Seconds per epoch of the loop's own training step (its set-up and pass) on features."""
    training = build_training(cfg, Runtime(10, n_samples), "cpu")
    with torch.no_grad():
        x = training.feats(torch.randn(BATCH, n_samples) * 0.1)
    batch = [{"x": x, "label": torch.randint(0, 10, (BATCH,))}]
    steps = 6
    t0 = time.perf_counter()
    for _ in range(steps):
        train_epoch(training, batch, torch.nn.Identity())
    return (time.perf_counter() - t0) / steps * rows / BATCH


def main() -> None:
    torch.set_num_threads(1)  # as a trial runs on a 2-core machine
    cache = default_cache()
    root = synth.ensure_builtin(cache)
    prepared = prepare(root, cache, Config())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    wave = ray_dataset(prepared, "train")
    rows = wave.count()
    lines = ["# feature storage: waveform + on-worker STFT vs stored spectrograms", "",
             f"{platform.node()} ({platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} torch thread), {date.today()}, "
             f"`python bench/feature_storage.py`; built-in train split, {rows} rows, "
             f"batch {BATCH}", "",
             "| preset | input | bytes/row | prep s | epoch input s (of which read) "
             "| CNN1 step s/epoch |",
             "|---|---|---:|---:|---:|---:|"]
    results = {}
    for preset in ("cpu", "study"):
        cfg = Config().replace(**PRESETS[preset])
        spec = build_features(cfg)

        def to_spec(batch: dict, spec: torch.nn.Module = spec) -> dict:
            with torch.no_grad():
                s = spec(torch.from_numpy(np.stack(batch["x"]).astype(np.float32)))
            return {"x": s.numpy(), "label": batch["label"]}

        one_pass(wave)  # warm the object store path
        # The fastest of 3 passes: one pass is ~1 s and this machine is noisy.
        t_read = min(one_pass(wave)[0] for _ in range(3))
        t_wave = min(one_pass(wave, spec)[0] for _ in range(3))
        t0 = time.perf_counter()
        stored = wave.map_batches(to_spec, batch_size=64).materialize()
        t_prep = time.perf_counter() - t0
        t_stored = min(one_pass(stored)[0] for _ in range(3))
        t_model = model_pass(cfg, prepared.segment_samples, rows)
        shape = feature_shape(cfg, prepared.segment_samples)
        b_wave, b_spec = prepared.segment_samples * 4, int(np.prod(shape)) * 4
        lines += [f"| {preset} | waveform + STFT on worker | {b_wave} | 0 | {t_wave:.2f} "
                  f"({t_read:.2f}) | {t_model:.1f} |",
                  f"| {preset} | stored spectrogram {shape} | {b_spec} | {t_prep:.2f} | "
                  f"{t_stored:.2f} | {t_model:.1f} |"]
        results[preset] = (t_wave, t_stored, t_model)
        print(f"{preset}: waveform+STFT {t_wave:.2f}s/epoch, stored {t_stored:.2f}s/epoch "
              f"(+{t_prep:.2f}s prep), model {t_model:.1f}s/epoch", flush=True)
    lines.append("")
    for preset, (tw, ts, tm) in results.items():
        lines.append(f"RESULT feature_storage {preset}_stored_over_onworker={ts / tw:.2f}")
        lines.append(f"RESULT feature_storage {preset}_input_share_of_epoch="
                     f"{tw / (tw + tm):.3f}")
    text = "\n".join(lines) + "\n"
    out = Path(__file__).resolve().parent.parent / "results" / "bench" / "feature_storage.md"
    out.write_text(text)
    print("\n".join(line for line in lines if line.startswith("RESULT")))
    ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
