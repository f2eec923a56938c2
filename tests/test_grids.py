"""The study's seven sweeps and `best` as grid files: expansion, draws, variants, carry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from raygenre.config import Config, ConfigError
from raygenre.features import BandNorm, SpecAugment, band_stats, build_features
from raygenre.gridfile import draw, load_grid
from raygenre.models import build_model, n_params
from raygenre.sweep.pipeline import STAGES
from raygenre.train import run_epoch


def test_the_pipeline_stages_are_grid_files_in_the_study_order() -> None:
    assert STAGES == ("baseline", "random_mlp", "cnn", "activations", "optimizers",
                      "batch_epoch", "regularization")
    for name in STAGES:
        assert load_grid(name).description


def test_random_mlps_are_drawn_from_the_seed() -> None:
    spec = {"n": 10, "layers": [2, 15], "units": [10, 128]}
    a, b = draw("hidden", spec, 0, "t"), draw("hidden", spec, 0, "t")
    c = draw("hidden", spec, 1, "t")
    assert a == b and a != c and len(a) == 10
    assert all(2 <= len(h) <= 15 and all(10 <= u <= 128 for u in h) for h in a)
    g = load_grid("random_mlp")
    assert g.axes["hidden"] == a and g.n_trials == 10


def test_optimizer_variants_pair_each_optimizer_with_its_schedule() -> None:
    g = load_grid("optimizers")
    trials = g.trials()
    assert len(trials) == 6
    pairs = {(t["optimizer"], t["scheduler"], t.get("plateau_patience")) for t in trials}
    assert pairs == {(o, "exponential", None) for o in ("adam", "sgd")} | {
        (o, "plateau", p) for o in ("adam", "sgd") for p in (2, 5)}
    assert {t["variant"] for t in trials} >= {"adam_exp", "sgd_plateau5"}


def test_best_grid_crosses_recipes_with_seeds_without_asha() -> None:
    g = load_grid("best")
    assert not g.asha and g.n_trials == 6
    assert {(t["variant"], t["seed"]) for t in g.trials()} == {
        (v, s) for v in ("study_cnn1", "small_cnn") for s in (0, 1, 2)}
    assert g.labels == ["variant", "seed"]
    smoke = g.smoke()
    assert smoke.n_trials == 4 and smoke.base["epochs"] == 2


@pytest.mark.parametrize("text, message", [
    ("description: d\nvariants: [{name: a, lrr: 1}]\n", "variant 'a': unknown config key 'lrr'"),
    ("description: d\nvariants: [{name: a}, {name: a}]\n", "variant name 'a' is used twice"),
    ("description: d\nvariants: {a: 1}\n", "'variants' must be a list"),
    ("description: d\ndraw: {lr: {n: 2}}\n", "cannot draw 'lr'"),
    ("description: d\ndraw: {hidden: {n: 2}}\n", "hidden needs exactly"),
    ("description: d\nasha: sometimes\n", "'asha' is false"),
])
def test_bad_variants_and_draws(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "g.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_grid(str(tmp_path / "g.yaml"))


def test_small_cnn_has_few_weights_and_takes_any_input_size() -> None:
    cfg = Config(model="small_cnn", features="logmel", n_mels=64, hop_length=1024)
    net = build_model(cfg, (1, 64, 108), 10)
    assert n_params(net) < 200_000
    assert net(torch.randn(2, 1, 64, 108)).shape == (2, 10)
    assert net(torch.randn(2, 1, 64, 300)).shape == (2, 10)


def test_band_norm_standardises_each_band_with_train_statistics() -> None:
    cfg = Config(features="logmel", band_norm=True, hop_length=1024)
    torch.manual_seed(0)
    waves = torch.randn(16, 22_050) * torch.linspace(0.01, 1, 16).unsqueeze(1)
    stats = band_stats(cfg, [waves[:8], waves[8:]])
    assert len(stats["mean"]) == cfg.n_mels
    feats = build_features(cfg, stats)
    assert isinstance(feats[1], BandNorm)
    out = feats(waves)
    per_band = out.permute(2, 0, 1, 3).reshape(cfg.n_mels, -1)  # (bands, everything else)
    assert per_band.mean(1).abs().max() < 1e-3
    assert (per_band.std(1) - 1).abs().max() < 0.05
    with pytest.raises(ValueError, match="no band statistics"):
        build_features(cfg)


def test_spec_augment_masks_and_mixup_trains() -> None:
    torch.manual_seed(0)
    x = torch.ones(4, 1, 64, 108)
    masked = SpecAugment()(x)
    assert (masked == 0).any() and (masked == 1).any()
    cfg = Config(model="mlp", features="waveform", hidden=(16,), mixup=0.4)
    net = build_model(cfg, (32,), 2)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    batches = [{"x": torch.randn(8, 32), "label": torch.randint(0, 2, (8,))}] * 4
    loss, acc = run_epoch(net, build_features(cfg), batches, torch.device("cpu"), opt,
                          mixup=cfg.mixup)
    assert loss > 0 and 0 <= acc <= 1
