from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from raygenre.config import PRESETS, REGISTRY_KEYS, Config, ConfigError, check_config
from raygenre.grid.file import list_grids, load_grid
from raygenre.grid.resolved import REGISTRIES, resolve, resolve_base, validate


def _grid(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "g.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", list_grids())
def test_every_grid_file_loads(name: str) -> None:
    g = load_grid(name)
    assert g.n_cells >= 1 and g.description
    defaults = Config()
    for preset in ("study", "cpu"):
        base = resolve(g, preset, seed=None).base
        for f in dataclasses.fields(Config):
            layers = (g.base, PRESETS[preset])  # the grid's own value wins over the preset's
            want = next((layer[f.name] for layer in layers if f.name in layer),
                        getattr(defaults, f.name))
            assert getattr(base, f.name) == want, (preset, f.name)
        assert resolve_base(g, preset, seed=11) == base.replace(seed=11)


def test_resolve_base_layers_defaults_preset_grid_carried_seed(tmp_path: Path) -> None:
    """Defaults < preset < grid base < keys carried from a previous stage < --seed. Each layer
    sets a key the layer below also sets, so only the right precedence gives these values."""
    g = load_grid(str(_grid(tmp_path, "description: d\nbase: {n_fft: 256, lr: 0.01, seed: 3}\n"
                                      "grid: {batch_size: [16, 32]}\n")))
    defaults, cpu = Config(), PRESETS["cpu"]
    assert cpu["hop_length"] != defaults.hop_length and cpu["n_fft"] not in (256, defaults.n_fft)

    base = resolve_base(g, "cpu", seed=None)
    assert base.hop_length == cpu["hop_length"]
    assert (base.n_fft, base.lr, base.seed) == (256, 0.01, 3)
    # Nothing else moved: every other key is still Config's default.
    assert base.replace(hop_length=defaults.hop_length, n_fft=defaults.n_fft, lr=defaults.lr,
                        seed=defaults.seed) == defaults
    assert resolve_base(g, "study", seed=None) == base.replace(hop_length=defaults.hop_length)

    carried = {"lr": 0.002, "seed": 5, "epochs": 7}
    stage = resolve_base(g, "cpu", seed=None, carried=carried)
    assert stage == base.replace(**carried)
    assert resolve_base(g, "cpu", seed=9, carried=carried) == stage.replace(seed=9)
    assert resolve_base(g, "cpu", seed=9) == base.replace(seed=9)
    # A carried value is checked with the grid's cells, like the grid's own base.
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        resolve(g, "cpu", seed=None, carried={"epochs": 0})


def test_batch_epoch_is_the_study_grid() -> None:
    g = load_grid("batch_epoch")
    assert g.axes == {"batch_size": [16, 20, 32, 64, 128, 256], "epochs": [3, 5, 7, 10]}
    assert g.n_cells == 24 and g.metric == "val/acc" and g.mode == "max"
    assert resolve(g, "study", None).max_epochs == 10
    # The study's CNN1 on its spectrogram, as Config's defaults: the file restates neither.
    assert resolve_base(g, "study", None).model == "cnn1" and "model" not in g.base


def test_smoke_shrinks_every_axis_and_epochs() -> None:
    s = load_grid("batch_epoch").smoke()
    assert s.axes == {"batch_size": [16, 20], "epochs": [1, 2]}


def test_grid_by_path_works_from_any_directory(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_grid("batch_epoch").n_cells == 24
    p = _grid(tmp_path, "description: d\ngrid:\n  lr: [0.001, 0.01]\n")
    assert load_grid(str(p)).axes == {"lr": [0.001, 0.01]}


@pytest.mark.parametrize("text, message", [
    ("description: d\nbase:\n  batchsize: 3\n", "unknown config key 'batchsize'"),
    ("description: d\nbase:\n  epochs: five\n", "key 'epochs' must be int"),
    ("description: d\ngrid:\n  lr: [0.1, fast]\n", "key 'lr' must be float"),
    ("description: d\nbase:\n  hidden: 64\n", "key 'hidden' must be a list of int"),
    ("description: d\nbase:\n  dropout: true\n", "key 'dropout' must be float"),
    ("description: d\nsweep:\n  lr: [1]\n", "unknown top-level key(s) 'sweep'"),
    ("description: d\nmetric: val/accuracy\n", "metric 'val/accuracy' is not one of"),
    ("description: d\ngrid:\n  lr: []\n", "grid key 'lr' must be a non-empty list"),
    ("description: d\ngrid:\n  epochs: [0, 2]\n", "epochs must be at least 1"),
    ("description: d\ngrid:\n  sample_rate: [8000, 16000]\n", "'sample_rate' cannot be swept"),
    ("description: d\nbase:\n  model: resnet\n", "model must be one of mlp, cnn1, cnn2"),
    ("description: d\nbase:\n  optimizer: rmsprop\n", "optimizer must be one of adam, sgd"),
    ("description: d\nbase:\n  scheduler: warmup\n", "scheduler must be one of none"),
    ("description: d\nbase:\n  activation: gelu\n", "activation must be one of relu"),
    ("- just\n- a list\n", "must be a mapping"),
    ("description: d\ncarry: [bogus]\n", "carry key 'bogus' is not a config key"),
])
def test_bad_grid_files_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:  # at load (keys, types) or resolved (values, rules)
        resolve(load_grid(str(_grid(tmp_path, text))), "study", None)
    assert message in str(e.value)
    assert "g.yaml" in str(e.value)


def test_unknown_grid_name_lists_the_grids() -> None:
    with pytest.raises(ConfigError, match="unknown grid 'batch_epochs'.*batch_epoch"):
        load_grid("batch_epochs")


def test_config_round_trips_through_plain_values() -> None:
    c = Config(hidden=(10, 20), lr=0.1)
    assert Config.from_dict(c.to_dict()) == c
    assert Config.from_dict({"lr": 1}).lr == 1.0  # YAML's "1" is a fine float


def test_a_grid_folder_of_ones_own_comes_first(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "batch_epoch.yaml").write_text("description: mine\ngrid: {lr: [0.1]}\n")
    (mine / "extra.yaml").write_text("description: extra\ngrid: {lr: [0.1, 0.2]}\n")
    assert load_grid("batch_epoch", grids=mine).description == "mine"
    assert load_grid("batch_epoch").n_cells == 24  # the built-in one, without --grids
    assert {"extra", "batch_epoch", "cnn"} <= set(list_grids(mine))
    assert load_grid("cnn", grids=mine).name == "cnn"  # built-ins still found
    with pytest.raises(ConfigError, match="--grids .*nowhere: not a folder"):
        load_grid("cnn", grids=tmp_path / "nowhere")


# At least one bad value for every Config field: each entry is the deltas that make a config
# bad, the field named first. A rule between keys carries the other keys it needs. A field
# added to Config without an entry here fails test_every_field_has_a_bad_value.
WAVE = {"model": "mlp", "features": "waveform"}
SEMI = {"model": "small_cnn", "features": "semitone"}
BAD: dict[str, list[dict[str, Any]]] = {
    "model": [{"model": "resnet"}],
    "hidden": [{"hidden": []}, {"hidden": [64, 0]}],
    "activation": [{"activation": "gelu"}],
    "dropout": [{"dropout": 1.0}, {"dropout": -0.1}, {"dropout": float("nan")}],
    "fc_width": [{"fc_width": 0}],
    "cnn_channels": [{"cnn_channels": []}, {"cnn_channels": [32, -1]}],
    "features": [{"features": "mfcc"}],
    "n_fft": [{"n_fft": 1}],
    "hop_length": [{"hop_length": 0}],
    "n_mels": [{"n_mels": 0}],
    "mel_n_fft": [{"mel_n_fft": 0}],
    "semitone_n_fft": [{"semitone_n_fft": 1}],
    "semitone_low": [{"semitone_low": -1}],
    # The top band reaches up to MIDI semitone_low + semitone_bins: 36 + 89 is 11.2 kHz, above
    # 22 050 Hz's Nyquist; 24 + 96 is 8.4 kHz, above 16 000 Hz's.
    "semitone_bins": [{"semitone_bins": 0}, {**SEMI, "semitone_bins": 89},
                      {**SEMI, "sample_rate": 16_000, "semitone_low": 24, "semitone_bins": 96}],
    "band_norm": [{"band_norm": "yes"}, {**WAVE, "band_norm": True}],
    "spec_augment": [{"spec_augment": 1}, {**WAVE, "spec_augment": True}],
    "mixup": [{"mixup": -0.2}, {"mixup": float("inf")}],
    "pitch_shift": [{**SEMI, "pitch_shift": -1}, {"pitch_shift": 2},
                    {**SEMI, "pitch_shift": 84}],
    "time_crop": [{"time_crop": -0.1}, {"time_crop": 1.5}, {**WAVE, "time_crop": 0.5}],
    "label_smoothing": [{"label_smoothing": 1.0}, {"label_smoothing": -0.1}],
    "optimizer": [{"optimizer": "rmsprop"}],
    "lr": [{"lr": 0.0}, {"lr": -0.001}, {"lr": float("inf")}],
    "momentum": [{"momentum": -0.1}, {"momentum": 1.0}],
    "weight_decay": [{"weight_decay": -1e-4}],
    "ema": [{"ema": 1.0}, {"ema": -0.5}],
    "scheduler": [{"scheduler": "warmup"}],
    "gamma": [{"gamma": 0.0}, {"gamma": 1.5}],
    "plateau_factor": [{"plateau_factor": 0.0}, {"plateau_factor": 1.0}],
    "plateau_patience": [{"plateau_patience": -1}],
    "batch_size": [{"batch_size": 0}],
    "epochs": [{"epochs": 0}],
    "seed": [{"seed": -1}, {"seed": 2**64}],
    "precision": [{"precision": "fp16"}],
    "tf32": [{"tf32": 1}],  # a switch: a value of another type is its only bad value
    "sample_rate": [{"sample_rate": 0}],
    "segment_seconds": [{"segment_seconds": 0.0}, {"segment_seconds": -5}],
    "val_fraction": [{"val_fraction": 0.0}, {"val_fraction": 1.0}],
    "test_fraction": [{"test_fraction": 0.0}, {"test_fraction": 0.5, "val_fraction": 0.5}],
}


def _judge(deltas: dict[str, Any]) -> None:
    """What a grid's cell goes through at load: its keys and types, then its values."""
    validate(Config.from_dict(deltas, "t"), "t")


def test_every_field_has_a_bad_value() -> None:
    assert list(BAD) == [f.name for f in dataclasses.fields(Config)]


@pytest.mark.parametrize("key, deltas", [(k, d) for k, ds in BAD.items() for d in ds],
                         ids=lambda v: str(v) if isinstance(v, str) else "")
def test_a_bad_value_fails_naming_the_key(key: str, deltas: dict[str, Any]) -> None:
    _judge({k: v for k, v in deltas.items() if k != key})  # the context alone is fine
    with pytest.raises(ConfigError) as e:
        _judge(deltas)
    msg = str(e.value)
    assert re.search(rf"\b{key}\b", msg) and f"got {deltas[key]!r}" in msg, msg
    assert "must be" in msg, msg  # and then what is allowed


@pytest.mark.parametrize("deltas", [
    {}, {"dropout": 0.0, "mixup": 0.0, "ema": 0.0, "label_smoothing": 0.0, "time_crop": 0.0},
    {"time_crop": 1.0}, {**WAVE, "time_crop": 1.0}, {"gamma": 1.0, "momentum": 0.0},
    {"plateau_patience": 0, "seed": 0}, {**SEMI, "pitch_shift": 83},
    {**SEMI, "semitone_bins": 88},  # up to MIDI 124, 10.5 kHz: below Nyquist
    {"val_fraction": 0.45, "test_fraction": 0.45}, {"semitone_bins": 200},  # unread: not semitone
])
def test_values_at_the_edges_pass(deltas: dict[str, Any]) -> None:
    _judge(deltas)


def test_the_registries_are_passed_in_whole() -> None:
    """config.py cannot import the registries; a caller that forgot one must not pass silently."""
    assert set(REGISTRIES) == set(REGISTRY_KEYS)
    check_config(Config(), "t", REGISTRIES)
    with pytest.raises(TypeError, match="scheduler"):
        check_config(Config(), "t", {k: v for k, v in REGISTRIES.items() if k != "scheduler"})


@pytest.mark.parametrize("text, where", [
    ("base: {features: semitone, pitch_shift: -1}\n", "base"),
    ("base: {features: semitone}\ngrid: {pitch_shift: [2, -1]}\n", "cell {'pitch_shift': -1}"),
    ("variants: [{name: a, features: semitone, pitch_shift: -1}]\n", "cell {'variant': 'a'"),
])
def test_a_negative_pitch_shift_fails_when_resolved_before_ray(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         text: str, where: str) -> None:
    import ray

    def no_ray(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray was started for a grid that should fail at load")

    monkeypatch.setattr(ray, "init", no_ray)
    with pytest.raises(ConfigError) as e:
        resolve(load_grid(str(_grid(tmp_path, "description: d\n" + text))), "study", None)
    msg = str(e.value)
    assert "g.yaml: " + where in msg and "pitch_shift must be 0 (off) or more" in msg, msg
    assert msg.endswith("got -1") and not ray.is_initialized()


def test_a_bad_seed_option_fails_when_resolved(tmp_path: Path) -> None:
    p = _grid(tmp_path, "description: d\ngrid: {lr: [0.1]}\n")
    with pytest.raises(ConfigError, match=r"g.yaml: base with --seed -3: seed must be in"):
        resolve(load_grid(str(p), seed=-3), "study", -3)
