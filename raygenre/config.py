"""The one typed default config and its presets.

Every knob a trial can turn lives in `Config`, with its default and why. Grid files (grid/file.py)
name only what they change; an unknown key or a wrong type fails at load with the key named, and
`check_config` is the one place a finished config's values are judged (ranges, allowed names,
the rules between keys). This module imports no other raygenre module: the registries (models,
features, optim) import it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

# Metric names are fixed: every trial reports these, tables and plots read these.
# val/track_acc is the majority vote per track: the figure GTZAN papers report, so a grid can
# select on what it will be compared by.
METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "val/track_acc")
METRIC_MODES = {"train/loss": "min", "train/acc": "max", "val/loss": "min", "val/acc": "max",
                "val/track_acc": "max"}


class ConfigError(ValueError):
    """A grid file, option or config value is wrong; the message names the key and the fix."""


@dataclass(frozen=True)
class Config:
    # --- model (registries in training/models.py) ---
    model: str = "cnn1"  # the study's best model; mlp and cnn2 are one key away
    hidden: tuple[int, ...] = (64, 64)  # mlp: hidden sizes (study baseline: one 64x64 hidden layer)
    activation: str = "relu"  # relu | leaky_relu | sigmoid | mixed (cycles through the three)
    dropout: float = 0.0  # study exercise 7 sweeps 0.2-0.5; off until then
    fc_width: int = 128  # CNN dense head width, as in the study
    # small_cnn (the `best` grid): 3x3 conv + batch norm + pool per block, then global average
    # pooling; ~100k weights where CNN1's dense layer alone has 56M.
    cnn_channels: tuple[int, ...] = (32, 64, 128)
    # --- input representation (data/features.py), computed on the trial's device ---
    features: str = "spectrogram"  # waveform (MLPs) | spectrogram (study) | logmel | semitone
    # torchaudio Spectrogram() defaults, as the study used: 201 bins x 552 frames for 5 s.
    n_fft: int = 400
    hop_length: int = 200
    n_mels: int = 64  # logmel only
    # logmel's own window (46 ms at 22 050 Hz, usual for music): mel bands need more FFT bins
    # than the CPU preset's 64, which would leave some bands empty.
    mel_n_fft: int = 1024
    # semitone: one band per equal-tempered semitone (a constant-Q view, as a pitch axis), so
    # scales, chords and a transposition are visible; mel bands are ~3 semitones wide at 200 Hz.
    # 4096 samples (186 ms) resolve neighbouring semitones from ~C2 (65 Hz) up.
    semitone_n_fft: int = 4096
    semitone_low: int = 36  # MIDI note of the lowest band (C2)
    semitone_bins: int = 84  # seven octaves, C2 to B8 (7.9 kHz): below Nyquist at 22 050 Hz
    band_norm: bool = False  # logmel: standardise each band with train-split mean/std
    spec_augment: bool = False  # while training: 2 frequency and 2 time masks per example
    mixup: float = 0.0  # mixup's Beta(alpha, alpha); 0 is off
    # semitone input, while training: shift each example by up to this many semitones (bands),
    # the augmentation music allows (a transposed piece is still in its style).
    pitch_shift: int = 0
    # While training, each example keeps a random window of this fraction of its frames: a
    # time shift that respects music (where a 5-s cut starts is arbitrary), and a model that
    # pools over time sees the whole segment at test. 0 (or 1) keeps every frame.
    time_crop: float = 0.0
    # Cross-entropy against labels smoothed by this much (Szegedy et al., 2016), training only:
    # validation and test losses stay plain cross-entropy, comparable across trials. 0 is off.
    label_smoothing: float = 0.0
    # --- optimisation (registries in training/optim.py) ---
    optimizer: str = "adam"
    lr: float = 4e-4  # the study's starting learning rate
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0  # L2; study exercise 7
    # An exponential moving average of the weights, updated after every optimizer step with
    # this decay (0.998: a horizon of ~500 steps); validation, the kept checkpoints and the test
    # use the average (timm's ModelEmaV2). On the real-music set it smoothed validation but
    # gained nothing on test (music_search round 5). 0 is off: the study trained without one.
    ema: float = 0.0
    scheduler: str = "none"  # none | exponential | plateau | cosine (over `epochs`)
    gamma: float = 0.95  # exponential decay per epoch (study)
    plateau_factor: float = 0.5  # ReduceLROnPlateau (study)
    plateau_patience: int = 2  # study used 2 (Adam) and 5 (SGD)
    batch_size: int = 32
    epochs: int = 5  # the study's baseline
    seed: int = 0  # one seed drives the split, init, dropout and shuffling
    # --- arithmetic: off by default, so the same seed gives bit-identical numbers ---
    # bf16 autocast roughly doubles a modern GPU's throughput on conv nets, at the price of
    # numbers that differ from fp32 (and, on some kernels, from run to run).
    precision: str = "fp32"  # fp32 | bf16
    tf32: bool = False  # TensorFloat-32 matmuls and convolutions on Ampere+ GPUs
    # --- data preparation: fixed for a whole sweep (the data is prepared once) ---
    sample_rate: int = 22_050
    segment_seconds: float = 5.0
    val_fraction: float = 0.1  # 80/10/10 inside each genre, by track
    test_fraction: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():  # lists read better in YAML, CSV and Tune's tables
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> Config:
        """Build from plain values (grid file, Tune config), checking each key and type."""
        return dataclasses.replace(cls(), **check_deltas(d, where))

    def replace(self, **deltas: Any) -> Config:
        return dataclasses.replace(self, **check_deltas(deltas, "override"))


# Keys fixed for a sweep: the data set is prepared once, so these cannot be grid axes.
DATA_KEYS = ("sample_rate", "segment_seconds", "val_fraction", "test_fraction")
PRECISIONS = ("fp32", "bf16")

# The study's input is 201x552: CNN1 then has a 56.6M-weight dense layer and trains at ~6
# samples/s on a 2-core CPU. This preset keeps every layer of every model and changes only the
# spectrogram's resolution (64 bins x 108 frames, ~20x cheaper), so a CPU sweep ends in minutes.
PRESETS: dict[str, dict[str, Any]] = {
    "study": {},
    "cpu": {"n_fft": 126, "hop_length": 1024},
}

FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check (and lightly coerce) a value against a Config field type: int->float, list->tuple."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if origin is tuple:
        (inner, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            return False, value
        out = []
        for v in value:
            ok, cv = _type_ok(v, inner)
            if not ok:
                return False, value
            out.append(cv)
        return True, tuple(out)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        return True, float(value)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    return isinstance(value, tp), value


_HINTS = typing.get_type_hints(Config)


def check_deltas(deltas: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate config deltas: every key known, every value of its field's type."""
    if not isinstance(deltas, dict):
        raise ConfigError(f"{where}: expected a mapping of config keys, "
                          f"got {type(deltas).__name__}")
    out = {}
    for key, value in deltas.items():
        if key not in FIELDS:
            raise ConfigError(f"{where}: unknown config key {key!r}. "
                              f"Valid keys: {', '.join(sorted(FIELDS))}")
        ok, coerced = _type_ok(value, _HINTS[key])
        if not ok:
            raise ConfigError(f"{where}: key {key!r} must be {_type_name(_HINTS[key])}, "
                              f"got {value!r} ({type(value).__name__})")
        out[key] = coerced
    return out


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        return f"a list of {typing.get_args(tp)[0].__name__}"
    return getattr(tp, "__name__", str(tp))


# Keys whose allowed values are a registry's names (training/models.py, data/features.py,
# training/optim.py).
REGISTRY_KEYS = ("model", "activation", "features", "optimizer", "scheduler")


def check_config(cfg: Config, where: str, registries: Mapping[str, Collection[str]]) -> None:
    """Judge a finished config: every key's range or allowed values, and the rules between keys.
    Raises ConfigError naming the key, its value and what is allowed.

    The one place these rules live. It is called on finished configs (a grid's base and each of
    its cells, once per sweep by grid.resolved.resolve), not by `from_dict`/`replace`: a config
    is built in layers (defaults < preset < grid base < carried keys < --seed < a cell's
    deltas), and a rule between keys, such as pitch_shift needing the semitone input, holds
    only once every layer is in.
    """
    # The registries' names are passed in rather than imported: the registries are built on
    # Config and import this module, and a registry that put its names here as a side effect
    # of being imported would be checked only where something happened to import it first.
    missing = set(REGISTRY_KEYS) - set(registries)
    if missing:
        raise TypeError(f"check_config needs the names of the {sorted(missing)} registries")
    allowed = {**registries, "precision": PRECISIONS}
    for key, names in allowed.items():
        if getattr(cfg, key) not in names:
            _fail(where, key, getattr(cfg, key), f"one of {', '.join(names)}")
    for key in FIELDS:
        value = getattr(cfg, key)
        if isinstance(value, float) and not math.isfinite(value):
            _fail(where, key, value, "a finite number")
    for key, ok, need in _ranges(cfg) + _between_keys(cfg):
        if not ok:
            _fail(where, key, getattr(cfg, key), need)


def _fail(where: str, key: str, value: Any, need: str) -> typing.NoReturn:
    shown = list(value) if isinstance(value, tuple) else value  # as a grid file writes it
    raise ConfigError(f"{where}: {key} must be {need}, got {shown!r}")


def _ranges(cfg: Config) -> list[tuple[str, bool, str]]:
    """(key, holds, what is allowed) for each key on its own, from how the code reads it."""
    c = cfg
    return [
        ("hidden", len(c.hidden) >= 1 and all(h >= 1 for h in c.hidden),
         "a non-empty list of positive sizes"),
        ("dropout", 0.0 <= c.dropout < 1.0, "in [0, 1) (1 would drop every unit)"),
        ("fc_width", c.fc_width >= 1, "at least 1"),
        ("cnn_channels", len(c.cnn_channels) >= 1 and all(ch >= 1 for ch in c.cnn_channels),
         "a non-empty list of positive channel counts"),
        ("n_fft", c.n_fft >= 2, "at least 2 (a window of samples)"),
        ("hop_length", c.hop_length >= 1, "at least 1"),
        ("n_mels", c.n_mels >= 1, "at least 1"),
        ("mel_n_fft", c.mel_n_fft >= 2, "at least 2 (a window of samples)"),
        ("semitone_n_fft", c.semitone_n_fft >= 2, "at least 2 (a window of samples)"),
        ("semitone_low", c.semitone_low >= 0, "a MIDI note number, 0 or more (36 is C2)"),
        ("semitone_bins", c.semitone_bins >= 1, "at least 1"),
        # Beta(alpha, alpha) needs alpha > 0; 0 is the switch that turns mixup off.
        ("mixup", c.mixup >= 0.0, "0 (off) or more (an alpha, 0.2 for example)"),
        ("pitch_shift", c.pitch_shift >= 0,
         "0 (off) or more: the most semitones an example is shifted, either way"),
        ("time_crop", 0.0 <= c.time_crop <= 1.0,
         "in [0, 1] (the fraction of frames kept; 0 or 1 keeps them all)"),
        # Smoothing of 1 gives uniform targets: nothing left to learn.
        ("label_smoothing", 0.0 <= c.label_smoothing < 1.0,
         "in [0, 1) (0.1 for example; 0 is off)"),
        ("lr", c.lr > 0.0, "positive"),
        # torch's SGD refuses a negative momentum; 1 or more never forgets a gradient.
        ("momentum", 0.0 <= c.momentum < 1.0, "in [0, 1)"),
        ("weight_decay", c.weight_decay >= 0.0, "0 or more"),
        # A decay of 1 would keep the first weights forever.
        ("ema", 0.0 <= c.ema < 1.0, "in [0, 1) (a decay per step, 0.998 for example; 0 is off)"),
        ("gamma", 0.0 < c.gamma <= 1.0, "in (0, 1] (the learning rate's decay per epoch)"),
        # ReduceLROnPlateau refuses a factor of 1 or more; 0 would stop training at the first
        # plateau.
        ("plateau_factor", 0.0 < c.plateau_factor < 1.0, "in (0, 1)"),
        ("plateau_patience", c.plateau_patience >= 0, "0 or more"),
        ("batch_size", c.batch_size >= 1, "at least 1"),
        ("epochs", c.epochs >= 1, "at least 1"),
        # torch.manual_seed takes at most 64 bits, and Ray's shuffle (numpy) no negative seed.
        ("seed", 0 <= c.seed < 2**64, "in [0, 2**64)"),
        ("sample_rate", c.sample_rate >= 1, "a positive number of samples per second"),
        ("segment_seconds", c.segment_seconds > 0.0, "positive"),
        # Each split takes at least one track of each genre (data.split_tracks), and the
        # training split the rest.
        ("val_fraction", 0.0 < c.val_fraction < 1.0, "in (0, 1)"),
        ("test_fraction", 0.0 < c.test_fraction < 1.0, "in (0, 1)"),
    ]


def _between_keys(cfg: Config) -> list[tuple[str, bool, str]]:
    """(key, holds, what is allowed) for the rules that tie a key to others."""
    c = cfg
    rules = [
        ("test_fraction", c.val_fraction + c.test_fraction < 1.0,
         f"below 1 - val_fraction ({1.0 - c.val_fraction:g}): the rest is the training split"),
        ("pitch_shift", c.pitch_shift == 0 or c.features == "semitone",
         f"0 with features {c.features!r}: a shift moves whole semitone bands, which only "
         f"features: semitone has"),
        ("pitch_shift", c.pitch_shift < c.semitone_bins,
         f"below semitone_bins ({c.semitone_bins}): a larger shift empties every band"),
    ]
    # The waveform is one flat axis (B, samples): masks, band statistics and crops of frames
    # need a time-frequency input.
    if c.features == "waveform":
        need = "off with features 'waveform' (it needs a time-frequency input)"
        rules += [("band_norm", not c.band_norm, need),
                  ("spec_augment", not c.spec_augment, need),
                  ("time_crop", c.time_crop in (0.0, 1.0),
                   "0 (off) with features 'waveform' (it crops frames of a time-frequency "
                   "input)")]
    if c.features == "semitone":
        # The top band's filter reaches up to the next semitone's centre (data/features.py's
        # semitone_fbanks): MIDI note semitone_low + semitone_bins must not pass Nyquist.
        top_hz = 440.0 * 2 ** ((c.semitone_low + c.semitone_bins - 69) / 12)
        nyquist = c.sample_rate / 2
        most = math.floor(69 + 12 * math.log2(nyquist / 440.0) + 1e-9) - c.semitone_low
        rules.append(("semitone_bins", top_hz <= nyquist,
                      f"at most {most} from semitone_low {c.semitone_low} at sample_rate "
                      f"{c.sample_rate}: the top band reaches {top_hz:.0f} Hz, above Nyquist "
                      f"({nyquist:.0f} Hz); lower semitone_low or semitone_bins"))
    return rules
