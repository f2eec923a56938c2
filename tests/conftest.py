from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from raygenre import synth


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
