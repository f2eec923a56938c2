"""A sweep's inputs, settled in the driver before any trial: the data (found, fetched,
prepared), the checks that would otherwise fail hours in, and the runtime facts trials need."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from raygenre.config import Config, ConfigError
from raygenre.data import synth
from raygenre.data.features import band_stats, build_augment, feature_key, feature_shape
from raygenre.data.prepared import Prepared, split_batches, to_tensor
from raygenre.data.sets import prepare
from raygenre.data.splits import read_split_lists
from raygenre.grid.resolved import ResolvedSweep
from raygenre.paths import default_cache
from raygenre.storage import Location, local_mirror_dir, mirror
from raygenre.training.models import build_model

# Smoke runs: a deterministic sample small enough for tests (2 train tracks per genre, 2 segments
# each), still through every stage.
SMOKE_TRACKS_PER_GENRE = 4
SMOKE_SEGMENTS_PER_TRACK = 2


@dataclass(frozen=True)
class Caches:
    local: Path  # where generated and prepared data live on this machine
    shared: Location | None  # a bucket every machine shares prepared data through


def caches(cache: str | None) -> Caches:
    """--cache: a folder, or a bucket (data is then prepared into the default local cache and
    shared through the bucket, so each set is prepared once for every machine)."""
    loc = Location.parse(cache, "--cache") if cache else None
    shared = loc if loc is not None and loc.scheme else None
    local = default_cache() if loc is None or shared else loc.local_path
    return Caches(local.resolve(), shared)


BUILTIN_SETS = ("builtin", "builtin:synthetic", "builtin:music")


def is_builtin(data: str | None) -> bool:
    return data is None or data in BUILTIN_SETS


def data_root(data: str | None, cache: Path) -> Path:
    """The audio folder: --data (fetched into the cache first if it is a bucket) or a
    built-in set (generated on first use): the synthetic one by default, `builtin:music` for
    rendered scores of real music."""
    if data and data.startswith("builtin") and data not in BUILTIN_SETS:
        raise ConfigError(f"--data {data}: unknown built-in set; choose one of "
                          f"{', '.join(BUILTIN_SETS)}")
    if data == "builtin:music":
        from raygenre.data import music

        try:
            root = music.ensure_builtin(cache)
        except music.MusicUnavailable as e:
            raise ConfigError(f"--data builtin:music: {e}") from e
        except OSError as e:
            raise ConfigError(f"cache folder {cache} is not writable ({e}); "
                              f"choose another with --cache") from e
        print(f"[data] built-in real music: {root}")
        return root
    if data and not is_builtin(data):
        loc = Location.parse(data, "--data")
        root = loc.local_path
        if root is None or loc.scheme:
            root = local_mirror_dir(cache, loc)
            print(f"[data] fetching {loc} -> {root} (only files not already there)")
            root = mirror(loc, root)
        return root
    try:
        root = synth.ensure_builtin(cache)
    except OSError as e:
        raise ConfigError(f"cache folder {cache} is not writable ({e}); "
                          f"choose another with --cache") from e
    print(f"[data] built-in set: {root}")
    return root


def prepare_data(data: str | None, cache: Caches, base: Config, smoke: bool,
                 split: str | None = None) -> Prepared:
    lists = read_split_lists(split) if split else None  # its errors before any decoding
    root = data_root(data, cache.local)
    sample = (SMOKE_TRACKS_PER_GENRE, SMOKE_SEGMENTS_PER_TRACK) if smoke else (None, None)
    return prepare(root, cache.local, base, *sample, shared=cache.shared, split=lists,
                   generated=is_builtin(data))


def check_batch_sizes(sweep: ResolvedSweep, prepared: Prepared) -> None:
    n_train = prepared.counts["train"]
    for bs in sweep.batch_sizes():
        if bs > n_train:
            raise ConfigError(f"{sweep.grid.path}: batch_size {bs} is larger than the training "
                              f"split ({n_train} segments); use a smaller batch or more data")


def check_models(sweep: ResolvedSweep, prepared: Prepared) -> None:
    """Build every cell's input and model without memory (meta device): a shape error shows
    now, with the cell named, not after an hour of trials. (Each value's range was
    judged when the sweep was resolved: grid.resolved.resolve.)"""
    seen = set()
    grid = sweep.grid
    for cell, cfg in sweep.cells:
        row = cell.as_row()
        key = (cfg.model, feature_key(cfg), cfg.hidden, cfg.cnn_channels, cfg.fc_width,
               cfg.pitch_shift, cfg.spec_augment, cfg.time_crop)
        if key in seen:
            continue
        seen.add(key)
        try:
            shape = feature_shape(cfg, prepared.segment_samples)
            augment = build_augment(cfg)
            with torch.device("meta"):
                model = build_model(cfg, shape, len(prepared.genres))
        except (ValueError, RuntimeError) as e:
            raise ConfigError(f"{grid.path}: cell {row}: the model cannot be built on this "
                              f"input: {e}") from e
        if cfg.time_crop:  # it trains on shorter windows than it is built (and tested) for
            try:
                with torch.device("meta"):
                    model(augment(torch.zeros(2, *shape)))
            except RuntimeError as e:
                raise ConfigError(f"{grid.path}: cell {row}: time_crop {cfg.time_crop} needs "
                                  f"a model that pools over time (small_cnn, band_linear); "
                                  f"{cfg.model} takes only its full input width: {e}") from e


def runtime_facts(sweep: ResolvedSweep, prepared: Prepared, threads: int) -> dict[str, Any]:
    """What every trial's loop needs besides its hyperparameters: facts of the data and the
    machine, and train-split band statistics for each representation a cell normalises."""
    wanted = {}
    for _, cfg in sweep.cells:
        if cfg.band_norm:
            wanted.setdefault(feature_key(cfg), cfg)

    def batches() -> Iterator[torch.Tensor]:  # streamed: the split need not fit in memory
        for b in split_batches(prepared, "train", 64, ["x"]):
            yield to_tensor(b.column("x"))

    return {"num_classes": len(prepared.genres), "segment_samples": prepared.segment_samples,
            "threads": threads,
            "band_stats": {k: band_stats(cfg, batches()) for k, cfg in wanted.items()}}
