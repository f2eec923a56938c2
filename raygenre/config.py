"""The one typed default config and its presets.

Every knob a trial can turn lives in `Config`, with its default and why. Grid files (gridfile.py)
name only what they change; an unknown key or a wrong type fails at load with the key named. This
module imports no other raygenre module: the registries (models, features, optim) import it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

# Metric names are fixed: every trial reports these, tables and plots read these.
METRICS = ("train/loss", "train/acc", "val/loss", "val/acc")
METRIC_MODES = {"train/loss": "min", "train/acc": "max", "val/loss": "min", "val/acc": "max"}


class ConfigError(ValueError):
    """A grid file, option or config value is wrong; the message names the key and the fix."""


@dataclass(frozen=True)
class Config:
    # --- model (registries in models.py) ---
    model: str = "cnn1"  # the study's best model; mlp and cnn2 are one key away
    hidden: tuple[int, ...] = (64, 64)  # mlp: hidden sizes (study baseline: one 64x64 hidden layer)
    activation: str = "relu"  # relu | leaky_relu | sigmoid | mixed (cycles through the three)
    dropout: float = 0.0  # study exercise 7 sweeps 0.2-0.5; off until then
    fc_width: int = 128  # CNN dense head width, as in the study
    # small_cnn (the `best` grid): 3x3 conv + batch norm + pool per block, then global average
    # pooling; ~100k weights where CNN1's dense layer alone has 56M.
    cnn_channels: tuple[int, ...] = (32, 64, 128)
    # --- input representation (features.py), computed on the trial's device ---
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
    # --- optimisation (registries in optim.py) ---
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
