"""The study's seven sweeps and `best` as grid files: expansion, draws, variants, carry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from raygenre.config import PRESETS, Config, ConfigError
from raygenre.data.features import BandNorm, SpecAugment, band_stats, build_features
from raygenre.grid.file import Grid, draw, grid_path, list_grids, load_grid
from raygenre.grid.resolved import resolve, resolve_base
from raygenre.sweep.pipeline import STAGES
from raygenre.training.models import build_model, n_params


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
    assert g.axes["hidden"] == a and g.n_cells == 10


def test_optimizer_variants_pair_each_optimizer_with_its_schedule() -> None:
    g = load_grid("optimizers")
    base = resolve_base(g, "study", None)
    cells = {c.variant: base.replace(**c.deltas) for c in g.cells()}
    assert len(cells) == 6
    pairs = {(c.optimizer, c.lr, c.scheduler, c.plateau_patience if c.scheduler == "plateau"
              else None) for c in cells.values()}
    assert pairs == {(o, lr, "exponential", None) for o, lr in (("adam", 4e-4), ("sgd", 0.01))} | {
        (o, lr, "plateau", p) for o, lr in (("adam", 4e-4), ("sgd", 0.01)) for p in (2, 5)}
    assert {c.momentum for c in cells.values()} == {0.9} and "sgd_plateau5" in cells


def test_best_grid_crosses_recipes_with_seeds_without_asha() -> None:
    g = load_grid("best")
    assert not g.asha and g.n_cells == 9
    assert {(c["variant"], c["seed"]) for c in g.cell_rows()} == {
        (v, s) for v in ("study_cnn1", "band_linear", "small_cnn") for s in (0, 1, 2)}
    assert g.labels == ["variant", "seed"]
    assert g.replicates == 3 and g.test == "every"  # seeds are replicates; every recipe tested
    smoke = g.smoke()  # two recipes, every replicate kept
    assert smoke.n_cells == 6 and smoke.base["epochs"] == 2


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


def test_spec_augment_masks_some_bins_and_leaves_the_rest() -> None:
    """(SpecAugment only while training, and mixup's arithmetic: tests/test_train.py.)"""
    torch.manual_seed(0)
    x = torch.ones(4, 1, 64, 108)
    masked = SpecAugment()(x)
    assert (masked == 0).any() and (masked == 1).any()
    # Masks are per example (iid) and are whole bands or whole frames.
    zero = masked[:, 0] == 0
    assert not all(torch.equal(zero[0], zero[i]) for i in range(1, 4))
    for z in zero:
        rows, cols = z.all(1), z.all(0)
        assert torch.equal(z, rows.unsqueeze(1) | cols.unsqueeze(0))


def test_time_crop_keeps_a_window_of_each_example_at_its_own_offset() -> None:
    from raygenre.data.features import TimeCrop

    torch.manual_seed(0)
    frames = torch.arange(108.0)
    x = frames.expand(16, 1, 3, 108).clone()  # every frame holds its own index
    out = TimeCrop(0.6)(x)
    assert out.shape == (16, 1, 3, 65)  # round(0.6 * 108)
    starts = out[:, 0, 0, 0]
    for i in range(16):  # one contiguous window, the same across bands
        want = torch.arange(starts[i].item(), starts[i].item() + 65)
        assert torch.equal(out[i, 0], want.expand(3, 65))
    assert len(set(starts.tolist())) > 1  # offsets differ between examples
    assert starts.min() >= 0 and starts.max() <= 108 - 65
    assert TimeCrop(1.0)(x) is x  # (its range: tests/test_config.py)


def _g(tmp_path: Path, text: str) -> Grid:
    (tmp_path / "g.yaml").write_text("description: d\n" + text)
    return load_grid(str(tmp_path / "g.yaml"))


def test_cells_that_differ_only_in_epochs_share_one_trial(tmp_path: Path) -> None:
    g = load_grid("batch_epoch")
    plans = resolve(g, "cpu", None).plans
    assert len(plans) == 6 and g.n_cells == 24
    assert all(p.members == [3, 5, 7, 10] for p in plans)
    assert sorted(p.longest.deltas["batch_size"] for p in plans) == [16, 20, 32, 64, 128, 256]
    # Every cell is in exactly one trial.
    assert sorted((c.deltas["batch_size"], c.deltas["epochs"]) for p in plans for c in p.cells) \
        == sorted((c["batch_size"], c["epochs"]) for c in g.cell_rows())


@pytest.mark.parametrize("text, n_trials", [
    # cosine's period is `epochs`: its 3-epoch cell is not the first epochs of the 5-epoch one
    ("base: {scheduler: cosine}\ngrid: {epochs: [3, 5], lr: [0.1, 0.2]}\n", 4),
    ("grid: {epochs: [3, 5], scheduler: [none, cosine]}\n", 3),  # only `none` shares
    ("grid: {epochs: [3, 5], lr: [0.1, 0.2]}\n", 2),  # lr differs: apart; epochs: together
    ("share_prefixes: false\ngrid: {epochs: [3, 5], lr: [0.1, 0.2]}\n", 4),
    ("variants: [{name: a, lr: 0.1}, {name: b, lr: 0.1}]\ngrid: {epochs: [2, 4]}\n", 2),
    ("grid: {lr: [0.1, 0.2]}\n", 2),
])
def test_grouping_keeps_apart_whatever_is_not_an_epoch_prefix(tmp_path: Path, text: str,
                                                              n_trials: int) -> None:
    g = _g(tmp_path, text)
    plans = resolve(g, "cpu", None).plans
    assert len(plans) == n_trials
    for p in plans:
        cfgs = p.configs
        # Members differ in epochs alone, and none reads its epoch count.
        assert len({c.replace(epochs=1) for c in cfgs}) == 1
        assert len({c.variant for c in p.cells}) == 1
        assert len(p.cells) == 1 or not any(c.scheduler == "cosine" for c in cfgs)


def test_share_prefixes_must_be_a_bool(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'share_prefixes' must be true or false"):
        _g(tmp_path, "share_prefixes: sometimes\n")


def test_draws_follow_the_commands_seed(tmp_path: Path) -> None:
    """`--seed 3` draws other MLPs than the file's own seed; the same seed, the same ones."""
    assert load_grid("random_mlp", 3).axes["hidden"] == load_grid("random_mlp", 3).axes["hidden"]
    assert load_grid("random_mlp", 3).axes["hidden"] != load_grid("random_mlp").axes["hidden"]
    assert load_grid("random_mlp").axes["hidden"] == load_grid("random_mlp", 0).axes["hidden"]


def test_a_checkout_that_is_not_installed_finds_its_grid_files(monkeypatch) -> None:
    """Without the package data `raygenre.grids` (a checkout on PYTHONPATH, not installed),
    grid names resolve to the checkout's grids/ instead of failing with an import error."""
    import importlib.resources

    from raygenre.grid import file as gridfile

    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(importlib.resources, "files", missing)
    folder = gridfile.builtin_grids()
    assert folder == Path(gridfile.__file__).resolve().parents[2] / "grids"
    assert load_grid("batch_epoch").name == "batch_epoch"
    monkeypatch.setattr(gridfile, "__file__", "/nonexistent/raygenre/grid/file.py")
    with pytest.raises(ConfigError, match="install the package"):
        gridfile.builtin_grids()


def restated_defaults(path: Path) -> list[str]:
    """The keys a grid file sets to the value they would have without it: in its base, a
    Config default (that no preset changes); in a variant, the base's value or else the
    default. A file holds only what it changes (the default's why-comment is in config.py)."""
    raw = yaml.safe_load(path.read_text()) or {}
    default = Config().to_dict()
    preset_keys = {k for preset in PRESETS.values() for k in preset}
    base = Config.from_dict(raw.get("base") or {}).to_dict()
    found = [f"base: {k}: {v!r}" for k, v in (raw.get("base") or {}).items()
             if k not in preset_keys and base[k] == default[k]]
    for v in raw.get("variants") or []:
        deltas = Config.from_dict({k: x for k, x in v.items() if k != "name"}).to_dict()
        found += [f"variant {v.get('name')}: {k}: {v[k]!r}" for k in v
                  if k != "name" and (k not in preset_keys or k in (raw.get("base") or {}))
                  and deltas[k] == base[k]]
    return found


@pytest.mark.parametrize("name", list_grids())
def test_a_grid_file_does_not_restate_a_default(name: str) -> None:
    path = grid_path(name)
    assert not restated_defaults(path), (
        f"{path} restates what it would get anyway (drop the key; if it is the study's "
        f"deliberate choice, say so in a comment): {restated_defaults(path)}")


def test_a_restated_default_is_found_in_a_base_and_in_a_variant(tmp_path: Path) -> None:
    f = tmp_path / "g.yaml"
    f.write_text("base: {model: mlp, epochs: 5, hidden: [64, 64], n_fft: 400}\n"
                 "variants:\n"
                 "  - {name: a, model: mlp, lr: 0.0004, weight_decay: 0.001}\n"
                 "  - {name: b, model: cnn1, optimizer: adam, n_fft: 400}\n")
    # n_fft: 400 pins the study's resolution against the cpu preset: a choice, not a restatement
    assert restated_defaults(f) == ["base: epochs: 5", "base: hidden: [64, 64]",
                                    "variant a: model: 'mlp'", "variant a: lr: 0.0004",
                                    "variant b: optimizer: 'adam'", "variant b: n_fft: 400"]
