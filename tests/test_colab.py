"""Colab: `--resume auto` (one command for a first run and a re-run after a disconnect), the
torch/torchaudio pair check, and examples/colab.ipynb (its slow kill-and-rerun test is in
tests/test_colab_notebook.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import raygenre
from raygenre.config import ConfigError
from raygenre.deps import pair_error
from raygenre.grid.options import RunOptions
from raygenre.paths import RunPaths
from raygenre.storage import Location
from raygenre.sweep import cli
from raygenre.sweep.run_state import AUTO, refuse_or_restore, resolve_resume

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "colab.ipynb"


def _paths(tmp_path: Path) -> RunPaths:
    return RunPaths(storage=Location.parse(str(tmp_path / "runs")), name="batch_epoch",
                    results_root=tmp_path / "results")


def test_resume_auto_starts_without_a_run_and_continues_one(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    assert resolve_resume(paths, AUTO) is False
    assert refuse_or_restore(paths, resolve_resume(paths, AUTO), fresh=False) is False
    paths.experiment.mkdir()
    assert resolve_resume(paths, AUTO) is True
    # A folder Tune cannot restore (no experiment state) is refused as --resume refuses it,
    # not deleted: only --fresh deletes.
    with pytest.raises(ConfigError, match="no restorable run"):
        refuse_or_restore(paths, resolve_resume(paths, AUTO), fresh=False)
    assert paths.experiment.exists()
    # The explicit spellings keep their meaning.
    assert resolve_resume(paths, True) is True and resolve_resume(paths, False) is False


def test_cli_takes_resume_auto_and_still_takes_a_bare_resume() -> None:
    def parsed(*argv: str) -> RunOptions:
        return cli.options(cli.parser().parse_args(list(argv)), list(argv))

    assert parsed("batch_epoch", "--resume", "auto").resume == "auto"
    assert parsed("batch_epoch", "--resume").resume is True
    assert parsed("batch_epoch").resume is False
    opts = parsed("batch_epoch", "--resume", "auto", "--smoke")
    assert opts.as_command().endswith("--smoke --resume auto")


def test_cli_resume_before_the_grid_name_is_a_bare_resume(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    # `--resume batch_epoch`: the optional value took the name; main() gives it back, and the
    # command then fails as a bare --resume does on an empty run folder.
    code = cli.main(["--resume", "batch_epoch", "--smoke", "--storage", str(tmp_path / "s"),
                     "--results", str(tmp_path / "r"), "--cache", str(tmp_path / "c")])
    assert code == 2
    assert "--resume: no run of 'batch_epoch-smoke'" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["yes", "Auto", 1])
def test_a_resume_value_other_than_auto_is_refused_naming_the_option(value: object) -> None:
    with pytest.raises(ConfigError, match="--resume: nothing .* or 'auto'"):
        raygenre.run("batch_epoch", resume=value)  # type: ignore[arg-type]


def test_resume_auto_and_fresh_contradict() -> None:
    with pytest.raises(ConfigError, match="contradict"):
        RunOptions(grid="batch_epoch", resume="auto", fresh=True).check()


def test_a_torch_and_torchaudio_of_two_minors_are_refused() -> None:
    assert pair_error("2.11.0+cu126", "2.11.1") is None
    assert pair_error("2.8.0", "2.8.0+cpu") is None
    msg = pair_error("2.9.1", "2.11.0")
    assert msg is not None and "torchaudio 2.11.0 is built for torch 2.11.x" in msg
    assert "torch 2.9.1 is installed" in msg and "pip install 'torchaudio==2.9.1'" in msg


def test_the_range_in_pyproject_is_what_raygenre_deps_guards() -> None:
    """pyproject.toml's torch and torchaudio ranges span the same minors (so every pair the
    guard accepts is installable), and constraints.txt's exact pair lies inside them."""
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = {d.split(">")[0].split("=")[0]: d for d in deps}
    # The same minors; torchaudio 2.11.1 left out (it does not load on torch 2.11.0).
    assert spec["torchaudio"].removeprefix("torchaudio") == (
        spec["torch"].removeprefix("torch") + ",!=2.11.1")
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    from packaging.specifiers import SpecifierSet

    assert pins["torch"] in SpecifierSet(spec["torch"].removeprefix("torch"))
    assert pins["torchaudio"] in SpecifierSet(spec["torchaudio"].removeprefix("torchaudio"))
    assert pair_error(pins["torch"], pins["torchaudio"]) is None


def test_the_notebook_mounts_drive_only_in_colab_and_resumes_by_itself() -> None:
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    mount = next(c for c in code if "drive.mount" in c)
    assert "if IN_COLAB" in mount
    run = next(c for c in code if "raygenre.run(" in c)
    assert 'resume="auto"' in run and "DRIVE" in run
    # No outputs committed: the test runs it, and a reader sees a clean notebook.
    assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code")
