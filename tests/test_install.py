"""raygenre installs like a library: a wheel, installed into a fresh virtual environment, lists
and runs its grids from any folder (slow: builds the wheel and runs a smoke sweep)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def _run(argv: list, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_a_wheel_in_a_fresh_venv_lists_and_runs_its_grids(tmp_path: Path,
                                                          smoke_run: dict) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, ROOT], tmp_path)
    (wheel,) = dist.glob("raygenre-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"raygenre/grids/batch_epoch.yaml", "raygenre/sweep/cli.py",
            "raygenre/report/plots.py"} <= set(names)
    assert "raygenre = raygenre.sweep.cli:console" in zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path)
    py, cli = venv / "bin" / "python", venv / "bin" / "raygenre"
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], tmp_path)
    # Its dependencies (torch, Ray: gigabytes) come from this test's environment as a plain
    # path entry: that folder's .pth files, this checkout's editable install among them, are
    # not read, so `raygenre` can only come from the wheel.
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     tmp_path).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    empty = tmp_path / "empty"
    empty.mkdir()
    where = _run([py, "-c", "import raygenre; print(raygenre.__file__)"], empty).stdout
    assert where.startswith(str(venv)), where
    listing = _run([cli, "--list"], empty).stdout
    assert "batch_epoch        24 cells     6 trials" in listing and "regularization" in listing

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "tiny.yaml").write_text(
        "description: my own grid\nasha: false\n"
        "base: {model: mlp, features: waveform, hidden: [8], epochs: 1}\n"
        "grid: {lr: [0.001, 0.01]}\n")
    assert "tiny                2 cells" in _run([cli, "--grids", mine, "--list"], empty).stdout

    common = ["--smoke", "--cache", smoke_run["base"] / "cache", "--results", empty / "r",
              "--storage", empty / "s"]
    _run([cli, "batch_epoch", *common], empty)
    _run([cli, "tiny", "--grids", mine, *common], empty)
    for name in ("batch_epoch-smoke", "tiny-smoke"):
        assert (empty / "r" / name / "best.json").is_file(), name
