"""The one typed default config, presets, and grid files (deltas over the defaults).

Every knob a trial can turn lives in `Config`, with its default and why. A grid file names only what
it changes; an unknown key or a wrong type fails at load with the key and file named.
"""

from __future__ import annotations

import dataclasses
import random
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

GRIDS_DIR = Path(__file__).resolve().parent.parent / "grids"

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
    # --- input representation (features.py), computed on the worker's device ---
    features: str = "spectrogram"  # waveform (MLPs) | spectrogram (study) | logmel
    # torchaudio Spectrogram() defaults, as the study used: 201 bins x 552 frames for 5 s.
    n_fft: int = 400
    hop_length: int = 200
    n_mels: int = 64  # logmel only
    # logmel's own window (46 ms at 22 050 Hz, usual for music): mel bands need more FFT bins
    # than the CPU preset's 64, which would leave some bands empty.
    mel_n_fft: int = 1024
    band_norm: bool = False  # logmel: standardise each band with train-split mean/std
    spec_augment: bool = False  # while training: 2 frequency and 2 time masks per example
    mixup: float = 0.0  # mixup's Beta(alpha, alpha); 0 is off
    # --- optimisation (registries in optim.py) ---
    optimizer: str = "adam"
    lr: float = 4e-4  # the study's starting learning rate
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0  # L2; study exercise 7
    scheduler: str = "none"  # none | exponential | plateau | cosine (over `epochs`)
    gamma: float = 0.95  # exponential decay per epoch (study)
    plateau_factor: float = 0.5  # ReduceLROnPlateau (study)
    plateau_patience: int = 2  # study used 2 (Adam) and 5 (SGD)
    batch_size: int = 32
    epochs: int = 5  # the study's baseline
    seed: int = 0  # one seed drives the split, init, dropout and shuffling
    # --- data preparation: fixed for a whole sweep (the data is prepared once) ---
    sample_rate: int = 22_050
    segment_seconds: float = 5.0
    val_fraction: float = 0.1  # 80/10/10 inside each genre, by track
    test_fraction: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)  # lists read better in YAML, CSV and Tune's tables
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> Config:
        """Build from plain values (grid file, Tune config), checking each key and type."""
        return dataclasses.replace(cls(), **check_deltas(d, where))

    def replace(self, **deltas: Any) -> Config:
        return dataclasses.replace(self, **check_deltas(deltas, "override"))


# Keys fixed for a sweep: the data set is prepared once, so these cannot be grid axes.
DATA_KEYS = ("sample_rate", "segment_seconds", "val_fraction", "test_fraction")

# The study's input is 201x552: CNN1 then has a 56.6M-weight dense layer and trains at ~6
# samples/s on a 2-core CPU. This preset keeps every layer of every model and changes only the
# spectrogram's resolution (64 bins x 108 frames, ~20x cheaper), so a CPU sweep ends in minutes.
PRESETS: dict[str, dict[str, Any]] = {
    "study": {},
    "cpu": {"n_fft": 126, "hop_length": 1024},
}

_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


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
        if key not in _FIELDS:
            raise ConfigError(f"{where}: unknown config key {key!r}. "
                              f"Valid keys: {', '.join(sorted(_FIELDS))}")
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


@dataclass(frozen=True)
class Grid:
    """A sweep: a description, one objective, the base deltas and the axes to cross."""

    name: str
    path: Path
    description: str
    metric: str = "val/acc"
    mode: str = "max"
    base: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    # Named delta sets crossed with the axes, for sweeps that are not a product (e.g. each
    # optimizer with its own learning rate). Each is {"name": ..., <config keys>...}.
    variants: tuple[dict[str, Any], ...] = ()
    carry: tuple[str, ...] = ()
    # ASHA: epochs before the first cut, and how many trials survive each rung (1 in rf).
    # asha=False runs every trial in full (seed studies, comparisons).
    asha: bool = True
    grace_period: int = 1
    reduction_factor: int = 3

    @property
    def n_trials(self) -> int:
        n = max(1, len(self.variants))
        for values in self.axes.values():
            n *= len(values)
        return n

    @property
    def swept(self) -> list[str]:
        """Keys that differ between trials: the columns of every table."""
        keys = (["variant"] if self.variants else []) + list(self.axes)
        for v in self.variants:
            keys += [k for k in v if k != "name" and k not in keys]
        return keys

    @property
    def labels(self) -> list[str]:
        """The short form of `swept` for tables and plots: a variant by its name."""
        return (["variant"] if self.variants else []) + list(self.axes)

    def trials(self) -> list[dict[str, Any]]:
        """Every trial's deltas over the sweep's base (variants, then the axes' product)."""
        combos: list[dict[str, Any]] = [{}]
        for key, values in self.axes.items():
            combos = [{**c, key: v} for c in combos for v in values]
        variants = [dict(v) for v in self.variants] or [{}]
        return [{**({"variant": v["name"]} if "name" in v else {}),
                 **{k: x for k, x in v.items() if k != "name"}, **c}
                for v in variants for c in combos]

    def max_epochs(self, base: Config) -> int:
        return max(t.get("epochs", base.epochs) for t in self.trials())

    def smoke(self) -> Grid:
        """The same sweep, shrunk to a few one- and two-epoch trials for tests."""
        axes = {k: list(v[:2]) for k, v in self.axes.items()}
        base = dict(self.base)
        if "epochs" in axes:
            axes["epochs"] = list(range(1, len(axes["epochs"]) + 1))
        base["epochs"] = min(base.get("epochs", Config.epochs), 2)
        variants = tuple({**v, "epochs": min(v["epochs"], 2)} if "epochs" in v else v
                         for v in self.variants[:2])
        return dataclasses.replace(self, base=base, axes=axes, variants=variants, grace_period=1)


_GRID_KEYS = {"description", "metric", "mode", "base", "grid", "variants", "draw", "carry",
              "asha"}


def grid_path(name_or_path: str) -> Path:
    """A grid by name (grids/NAME.yaml) or by path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"grid file {p} does not exist")
        return p.resolve()
    candidate = GRIDS_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise ConfigError(f"unknown grid {name_or_path!r}. Grids: {', '.join(list_grids())} "
                          f"(or give a path to a .yaml file)")
    return candidate


def list_grids() -> list[str]:
    return sorted(p.stem for p in GRIDS_DIR.glob("*.yaml"))


def load_grid(name_or_path: str) -> Grid:
    path = grid_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a grid file must be a mapping with keys "
                          f"{', '.join(sorted(_GRID_KEYS))}")
    unknown = set(raw) - _GRID_KEYS
    if unknown:
        names = ", ".join(map(repr, sorted(unknown)))
        raise ConfigError(f"{path}: unknown top-level key(s) {names}"
                          f"; allowed: {', '.join(sorted(_GRID_KEYS))} (config keys go under "
                          f"'base:' or 'grid:')")
    metric = raw.get("metric", "val/acc")
    if metric not in METRICS:
        raise ConfigError(f"{path}: metric {metric!r} is not one of {', '.join(METRICS)}")
    mode = raw.get("mode", METRIC_MODES[metric])
    if mode not in ("max", "min"):
        raise ConfigError(f"{path}: mode must be 'max' or 'min', got {mode!r}")
    base = check_deltas(raw.get("base") or {}, f"{path}: base")
    axes_raw = raw.get("grid") or {}
    if not isinstance(axes_raw, dict):
        raise ConfigError(f"{path}: 'grid' must map config keys to lists of values")
    axes: dict[str, list[Any]] = {}
    for key, values in axes_raw.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid key {key!r} must be a non-empty list of values, "
                              f"got {values!r}")
        if key in DATA_KEYS:
            raise ConfigError(f"{path}: grid key {key!r} cannot be swept: the data is prepared "
                              f"once per sweep; set it under 'base:' instead")
        axes[key] = [check_deltas({key: v}, f"{path}: grid")[key] for v in values]
    variants = _load_variants(raw.get("variants") or [], path)
    for key, spec in (raw.get("draw") or {}).items():
        if key in axes:
            raise ConfigError(f"{path}: {key!r} is both a grid axis and drawn")
        axes[key] = draw(key, spec, int(base.get("seed", Config.seed)), f"{path}: draw")
    carry = raw.get("carry") or []
    if not isinstance(carry, list):
        raise ConfigError(f"{path}: 'carry' must be a list of config keys")
    for k in carry:
        if k not in _FIELDS:
            raise ConfigError(f"{path}: carry key {k!r} is not a config key")
    asha = raw.get("asha", {})
    use_asha = asha is not False
    asha = {} if asha in (False, True, None) else asha
    if not isinstance(asha, dict) or set(asha) - {"grace_period", "reduction_factor"}:
        raise ConfigError(f"{path}: 'asha' is false (run every trial in full) or a mapping of "
                          f"grace_period and reduction_factor")
    for k, v in asha.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{path}: asha.{k} must be a positive integer, got {v!r}")
    grid = Grid(name=path.stem, path=path, description=str(raw.get("description", "")),
                metric=metric, mode=mode, base=base, axes=axes, variants=variants,
                carry=tuple(carry), asha=use_asha, **asha)
    # Every trial's config must be valid on its own, e.g. epochs >= 1.
    validate(Config.from_dict(base), f"{path}: base")
    for t in grid.trials():
        validate(Config.from_dict({**base, **trial_deltas(t)}), f"{path}: trial {t}")
    return grid


def trial_deltas(trial: dict[str, Any]) -> dict[str, Any]:
    """A trial's config deltas without its label ('variant')."""
    return {k: v for k, v in trial.items() if k != "variant"}


def flat_trial_config(config: dict[str, Any]) -> dict[str, Any]:
    """A Tune trial config with its variant (a nested dict) merged in; 'variant' keeps the
    variant's name."""
    variant = config.get("variant")
    if not isinstance(variant, dict):
        return dict(config)
    return {**config, **{k: v for k, v in variant.items() if k != "name"},
            "variant": variant.get("name")}


def _load_variants(raw: Any, path: Path) -> tuple[dict[str, Any], ...]:
    if not isinstance(raw, list) or not all(isinstance(v, dict) for v in raw):
        raise ConfigError(f"{path}: 'variants' must be a list of mappings of config keys")
    out, names = [], set()
    for i, v in enumerate(raw):
        name = str(v.get("name", f"v{i}"))
        if name in names:
            raise ConfigError(f"{path}: variant name {name!r} is used twice")
        names.add(name)
        deltas = check_deltas({k: x for k, x in v.items() if k != "name"},
                              f"{path}: variant {name!r}")
        if any(k in DATA_KEYS for k in deltas):
            raise ConfigError(f"{path}: variant {name!r} sets a data key; data is prepared "
                              f"once per sweep")
        out.append({"name": name, **deltas})
    return tuple(out)


_DRAWS = {"hidden": {"n", "layers", "units"}}


def draw(key: str, spec: Any, seed: int, where: str) -> list[Any]:
    """Values drawn at random from the seed (the study's random MLPs): the same seed, the same
    list. `hidden: {n: 10, layers: [2, 15], units: [10, 128]}`."""
    if key not in _DRAWS:
        raise ConfigError(f"{where}: cannot draw {key!r}; drawable: {', '.join(_DRAWS)}")
    if not isinstance(spec, dict) or set(spec) != _DRAWS[key]:
        raise ConfigError(f"{where}: {key} needs exactly {sorted(_DRAWS[key])}, got {spec!r}")
    (lo_l, hi_l), (lo_u, hi_u) = spec["layers"], spec["units"]
    rng = random.Random(f"{seed}:draw:{key}")
    return [tuple(rng.randint(lo_u, hi_u) for _ in range(rng.randint(lo_l, hi_l)))
            for _ in range(int(spec["n"]))]


def validate(cfg: Config, where: str) -> None:
    """Range and name checks that types alone cannot express."""
    from raygenre import features, models, optim  # registries; imported late to keep this light

    checks = [
        (cfg.model in models.MODELS, "model", f"one of {', '.join(models.MODELS)}"),
        (cfg.activation in models.ACTIVATIONS, "activation",
         f"one of {', '.join(models.ACTIVATIONS)}"),
        (cfg.features in features.FEATURES, "features", f"one of {', '.join(features.FEATURES)}"),
        (cfg.optimizer in optim.OPTIMIZERS, "optimizer", f"one of {', '.join(optim.OPTIMIZERS)}"),
        (cfg.scheduler in optim.SCHEDULERS, "scheduler", f"one of {', '.join(optim.SCHEDULERS)}"),
        (cfg.epochs >= 1, "epochs", "at least 1"),
        (cfg.batch_size >= 1, "batch_size", "at least 1"),
        (0.0 <= cfg.dropout < 1.0, "dropout", "in [0, 1)"),
        (cfg.lr > 0, "lr", "positive"),
        (cfg.weight_decay >= 0, "weight_decay", "0 or more"),
        (all(h >= 1 for h in cfg.hidden) and len(cfg.hidden) >= 1, "hidden",
         "a non-empty list of positive sizes"),
        (cfg.n_fft >= 2 and cfg.hop_length >= 1, "n_fft/hop_length", "positive"),
        (cfg.val_fraction > 0 and cfg.test_fraction > 0
         and cfg.val_fraction + cfg.test_fraction < 1, "val_fraction/test_fraction",
         "positive and summing to less than 1"),
        (cfg.segment_seconds > 0, "segment_seconds", "positive"),
    ]
    for ok, key, need in checks:
        if not ok:
            raise ConfigError(f"{where}: {key} must be {need}, got "
                              f"{getattr(cfg, key.split('/')[0])!r}")
