from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf

from raygenre.data import synth


def write_clip(path: Path, seconds: float, sr: int = 22_050, channels: int = 1,
               subtype: str = "PCM_16", seed: int = 0, fmt: str | None = None) -> Path:
    """A short noisy tone: enough to decode, segment and train on."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    mono = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(n)
    data = np.stack([mono] * channels, axis=1) if channels > 1 else mono
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data.astype(np.float32), sr, subtype=subtype, format=fmt)
    return path


@pytest.fixture
def gtzan_like(tmp_path: Path) -> Path:
    """A GTZAN-layout folder: 3 genres x 10 tracks of 11 s (2 segments each), mixed formats."""
    root = tmp_path / "gtzan"
    for gi, genre in enumerate(("blues", "jazz", "rock")):
        for k in range(10):
            ext = (".wav", ".au", ".flac")[k % 3]
            fmt = "AU" if ext == ".au" else None
            write_clip(root / genre / f"{genre}.{k:05d}{ext}", 11.0, seed=gi * 100 + k, fmt=fmt)
    return root


@pytest.fixture(scope="session")
def builtin_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small built-in set (4 tracks x 10 s per genre) for data tests."""
    return synth.ensure_builtin(tmp_path_factory.mktemp("cache"), tracks_per_genre=4,
                                seconds=10.0, seed=0, quiet=True)


def run_cli(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "raygenre.grid", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def history_by_config(path: Path) -> dict[tuple, dict[str, str]]:
    """history.csv keyed by (every swept key, epoch): cell ids differ between runs."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    metrics = ("train/loss", "train/acc", "val/loss", "val/acc")
    out = {}
    for r in rows:
        key = tuple((k, v) for k, v in r.items() if k not in metrics and k != "cell_id")
        out[key] = {m: r[m] for m in metrics}
    return out


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One uninterrupted `batch_epoch --smoke` run, shared by the e2e and resume tests."""
    base = tmp_path_factory.mktemp("e2e")
    # From an unrelated working directory: grid names must resolve anyway.
    args = ["batch_epoch", "--smoke", "--results", str(base / "results"), "--storage",
            str(base / "runs"), "--cache", str(base / "cache")]
    # An earlier raygenre's files in the results folder, under their old names: the sweep
    # removes them (tests/test_grid_e2e.py checks), not leaves them beside its own.
    old = base / "results" / "batch_epoch-smoke"
    old.mkdir(parents=True)
    (old / "trials.csv").write_text("trial_id,run_id\nx,x\n")
    (old / "val_acc_by_trial.png").write_bytes(b"")
    proc = run_cli(args, cwd=base)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"base": base, "args": args, "proc": proc,
            "out": base / "results" / "batch_epoch-smoke"}


def nearest_centroid_accuracy(feature: dict[str, list[float]]) -> float:
    """Leave-one-out nearest-centroid accuracy of a single scalar feature."""
    hits = total = 0
    for genre, values in feature.items():
        for i, v in enumerate(values):
            centroids = {g: np.mean([x for j, x in enumerate(vs) if (g, j) != (genre, i)])
                         for g, vs in feature.items()}
            hits += min(centroids, key=lambda g: abs(centroids[g] - v)) == genre
            total += 1
    return hits / total


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """One S3-protocol server (moto) for the test session; see tests/s3server.py."""
    from tests import s3server

    server = s3server.start(tmp_path_factory.mktemp("moto"))
    try:
        yield server
    finally:
        server.stop()


def kill_tree(*pids: int) -> None:
    """SIGKILL these processes, every process group one of them leads, and everything they
    started (their Ray too): a machine lost, as the kill-and-resume tests need it."""
    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs.update({p.pid: p for p in (root, *root.children(recursive=True))})
        except psutil.NoSuchProcess:
            pass
    for pid in pids:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for p in procs.values():
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(procs.values()), timeout=30)
