from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from raygenre.config import PRESETS, Config, ConfigError
from raygenre.gridfile import list_grids, load_grid, resolve_base


def _grid(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "g.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", list_grids())
def test_every_grid_file_loads(name: str) -> None:
    g = load_grid(name)
    assert g.n_trials >= 1 and g.description
    defaults = Config()
    for preset in ("study", "cpu"):
        base = resolve_base(g, preset, seed=None)
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
    # A carried value is checked with the grid's trials, like the grid's own base.
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        resolve_base(g, "cpu", seed=None, carried={"epochs": 0})


def test_batch_epoch_is_the_study_grid() -> None:
    g = load_grid("batch_epoch")
    assert g.axes == {"batch_size": [16, 20, 32, 64, 128, 256], "epochs": [3, 5, 7, 10]}
    assert g.n_trials == 24 and g.metric == "val/acc" and g.mode == "max"
    assert g.max_epochs(Config()) == 10
    assert g.base["model"] == "cnn1"


def test_smoke_shrinks_every_axis_and_epochs() -> None:
    s = load_grid("batch_epoch").smoke()
    assert s.axes == {"batch_size": [16, 20], "epochs": [1, 2]}


def test_grid_by_path_works_from_any_directory(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_grid("batch_epoch").n_trials == 24
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
    with pytest.raises(ConfigError) as e:
        load_grid(str(_grid(tmp_path, text)))
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
    assert load_grid("batch_epoch").n_trials == 24  # the built-in one, without --grids
    assert {"extra", "batch_epoch", "cnn"} <= set(list_grids(mine))
    assert load_grid("cnn", grids=mine).name == "cnn"  # built-ins still found
    with pytest.raises(ConfigError, match="--grids .*nowhere: not a folder"):
        load_grid("cnn", grids=tmp_path / "nowhere")
