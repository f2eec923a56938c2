"""The checks of a grid under the preset it will run with happen before Ray starts, when every
preset the command can get fails them; a preset-dependent failure waits for the cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import raygenre
from raygenre.config import PRESETS, ConfigError
from raygenre.grid.file import load_grid
from raygenre.grid.options import RunOptions
from raygenre.sweep.tuner import possible_presets, resolve_before_start


def _opts(tmp_path: Path, **kw) -> RunOptions:
    return RunOptions(grid="baseline", results=str(tmp_path / "results"),
                      storage=str(tmp_path / "runs"), cache=str(tmp_path / "cache"), **kw)


def test_possible_presets_follow_choose_preset() -> None:
    assert possible_presets("auto", None) == ["cpu", "study"]  # built-in: depends on a GPU
    assert possible_presets("auto", "/data/gtzan") == ["study"]
    assert possible_presets("cpu", "/data/gtzan") == ["cpu"]


def test_a_rule_broken_under_every_preset_fails_before_ray(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    # pitch_shift needs the semitone input; a preset that sets it breaks that rule for a
    # grid (baseline: raw waveform) that is valid as written.
    for name in PRESETS:
        monkeypatch.setitem(PRESETS, name, {**PRESETS[name], "pitch_shift": 1})
    with pytest.raises(ConfigError, match="pitch_shift"):
        raygenre.run("baseline", results=tmp_path / "results", storage=tmp_path / "runs",
                     cache=tmp_path / "cache")
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()  # refused before Ray was started
    assert not (tmp_path / "runs").exists()  # and before any run folder was made


def test_a_rule_broken_under_one_preset_waits_for_the_cluster(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.setitem(PRESETS, "cpu", {**PRESETS["cpu"], "pitch_shift": 1})
    grid = load_grid("baseline")
    candidates = resolve_before_start(grid, _opts(tmp_path))  # auto on built-in data
    assert isinstance(candidates["cpu"], ConfigError)  # kept, for set_up to raise if picked
    assert candidates["study"].preset == "study"  # study may still do
    with pytest.raises(ConfigError, match="pitch_shift"):
        resolve_before_start(grid, _opts(tmp_path, preset="cpu"))  # asked for: fails now
