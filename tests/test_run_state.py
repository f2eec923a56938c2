"""Whether a stored run matches this command: the comparison behind --resume and the
pipeline's reuse of finished stages (the runs themselves: tests/test_resume.py, slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raygenre.config import Config, ConfigError
from raygenre.paths import RunPaths
from raygenre.storage import Location
from raygenre.sweep.run_state import check_manifest, clear_tensorboard, differences


def _shaped(**base: object) -> dict:
    cfg = Config().replace(**base)
    return json.loads(json.dumps({"grid": "g", "base": cfg.to_dict(), "threads": 1}))


def _older(shaped: dict, *missing: str) -> dict:
    """As a version without these config keys wrote it."""
    return {**shaped, "base": {k: v for k, v in shaped["base"].items() if k not in missing}}


def test_a_key_added_since_the_run_reads_as_its_default() -> None:
    now = _shaped(lr=0.01)
    assert differences(_older(now, "label_smoothing", "time_crop"), now) == []


def test_a_key_added_since_the_run_but_set_now_is_a_difference() -> None:
    now = _shaped(label_smoothing=0.1)
    assert differences(_older(now, "label_smoothing"), now) == [
        "base.label_smoothing: stored 0.0, now 0.1"]


def test_a_changed_value_is_a_difference() -> None:
    assert differences(_shaped(lr=0.01), _shaped(lr=0.02)) == ["base.lr: stored 0.01, now 0.02"]
    assert differences({**_shaped(), "threads": 2}, _shaped()) == ["threads: stored 2, now 1"]


def test_resume_refuses_another_command_and_accepts_an_older_manifest(tmp_path: Path) -> None:
    paths = RunPaths(storage=Location.parse(tmp_path), name="g", results_root=tmp_path / "results")
    paths.experiment.mkdir()
    now = _shaped(seed=3)
    paths.manifest.write_text(json.dumps(_older(now, "label_smoothing")))
    check_manifest(paths, now)  # would raise if the missing key counted as a difference
    with pytest.raises(ConfigError, match=r"differs from the run stored.*base.seed: stored 3, "
                                          r"now 4"):
        check_manifest(paths, _shaped(seed=4))


def test_a_new_run_clears_an_earlier_sweeps_tensorboard_runs(tmp_path: Path) -> None:
    # Three sweeps of the main job into one results folder once left 18 TensorBoard runs
    # there, drawn together as if they were one sweep's six.
    paths = RunPaths(storage=Location.parse(str(tmp_path / "runs")), name="g",
                     results_root=tmp_path / "results")
    assert clear_tensorboard(paths) == 0  # nothing there yet
    earlier = [paths.tensorboard / f"abc12_0000{i},batch_size=16" for i in range(3)]
    for run in earlier:
        (run / "hparams").mkdir(parents=True)
        (run / "events.out.tfevents.1").write_bytes(b"x")
    assert clear_tensorboard(paths) == 3
    assert paths.tensorboard.is_dir() and not any(paths.tensorboard.iterdir())
