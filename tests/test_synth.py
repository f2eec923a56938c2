from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from raygenre.data import synth
from raygenre.data.audio import discover

from .conftest import nearest_centroid_accuracy


def test_builtin_set_has_gtzan_layout_and_is_deterministic(builtin_small: Path,
                                                           tmp_path: Path) -> None:
    tracks, _ = discover(builtin_small)
    assert len(tracks) == 40 and len({t.genre for t in tracks}) == 10
    assert tracks[0].path.name == "blues.00000.wav"
    again = synth.ensure_builtin(tmp_path, tracks_per_genre=4, seconds=10.0, seed=0, quiet=True)
    a, _ = sf.read(builtin_small / "jazz" / "jazz.00002.wav")
    b, _ = sf.read(again / "jazz" / "jazz.00002.wav")
    assert np.array_equal(a, b)


def test_tracks_vary_and_loudness_is_not_a_genre_cue() -> None:
    """Within a genre tracks differ; loudness ranges of genres overlap (level gives nothing)."""
    levels: dict[str, list[float]] = {}
    for genre in synth.GENRES:
        waves = [synth.render_track(genre, np.random.default_rng(k), seconds=4.0)
                 for k in range(6)]
        assert not np.allclose(waves[0], waves[1])
        levels[genre] = [20 * np.log10(np.sqrt(np.mean(w**2))) for w in waves]
    lo = max(min(v) for v in levels.values())
    hi = min(max(v) for v in levels.values())
    assert lo < hi, f"some genre's loudness range does not overlap the others: {levels}"


def test_no_single_global_cue_separates_genres() -> None:
    """Level or the loudest frequency alone must stay near chance (0.1); rhythm and timbre are
    what separates the genres."""
    level: dict[str, list[float]] = {}
    peak: dict[str, list[float]] = {}
    for genre in synth.GENRES:
        for k in range(8):
            w = synth.render_track(genre, np.random.default_rng(1000 + k), seconds=5.0)
            level.setdefault(genre, []).append(float(np.sqrt(np.mean(w**2))))
            spectrum = np.abs(np.fft.rfft(w))
            peak.setdefault(genre, []).append(float(np.argmax(spectrum) * 22_050 / len(w)))
    assert nearest_centroid_accuracy(level) < 0.25
    assert nearest_centroid_accuracy(peak) < 0.3
