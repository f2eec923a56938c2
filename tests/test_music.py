"""The built-in real-music set (raygenre[music]): layout, provenance, determinism, duplicates,
no trivial cue, and the error when its packages are missing."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from raygenre import music
from raygenre.config import ConfigError
from raygenre.data import discover
from raygenre.sweep.inputs import data_root

from .conftest import nearest_centroid_accuracy

pytest.importorskip("music21", reason="needs the [music] extra (README set-up installs it)")
pytest.importorskip("tinysoundfont", reason="needs tinysoundfont (README set-up installs it)")

SAMPLE_CLASSES = tuple(music.CLASSES)


def _manifest(root: Path) -> list[dict[str, str]]:
    with open(root / "manifest.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def music_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every class, 5 tracks of 8 s each, rendered with 2 processes."""
    return music.ensure_builtin(tmp_path_factory.mktemp("music"), tracks_per_class=5,
                                seconds=8.0, seed=0, workers=2, min_tracks=5, quiet=True)


def test_every_class_has_enough_scores_in_the_corpus() -> None:
    for style in music.CLASSES:
        units = music.candidates(style)
        assert len(units) >= music.MIN_TRACKS_PER_CLASS, style
        assert len({u.source for u in units}) == len(units), f"{style}: a source listed twice"
        assert not any(u.path.endswith(".rntxt") for u in units)
    # Beethoven op. 18/1 is in the corpus as Humdrum and MusicXML: one movement, counted once.
    quartets = {u.path for u in music.candidates("string_quartet")}
    assert "beethoven/opus18no1/movement1.mxl" in quartets
    assert "beethoven/opus18no1/movement1.krn" not in quartets
    # A multi-tune ABC file gives one candidate per tune.
    han = [u for u in music.candidates("chinese_folk") if u.path == "essenFolksong/han1.abc"]
    assert len(han) > 500 and len({u.number for u in han}) == len(han)


def test_gtzan_layout_with_provenance(music_sample: Path) -> None:
    tracks, skipped = discover(music_sample)
    assert not skipped
    assert sorted({t.genre for t in tracks}) == sorted(SAMPLE_CLASSES)
    assert len(tracks) == 5 * len(SAMPLE_CLASSES)
    rows = _manifest(music_sample)
    assert sorted(r["file"] for r in rows) == sorted(
        str(t.path.relative_to(music_sample)) for t in tracks)
    for r in rows:
        assert r["file"].startswith(r["class"] + "/")
        assert r["source"].startswith(music.CLASSES[r["class"]].prefixes)
        audio, sr = sf.read(music_sample / r["file"])
        assert sr == 22_050 and audio.ndim == 1 and len(audio) == 8 * 22_050
        assert np.sqrt(np.mean(audio**2)) > 1e-3, f"{r['file']} is silent"
    # Sources are distinct pieces: no file rendered twice.
    assert len({r["source"] for r in rows}) == len(rows)


def test_deterministic_and_independent_of_the_number_of_processes(tmp_path: Path) -> None:
    kw = {"tracks_per_class": 2, "seconds": 4.0, "seed": 3, "classes": ("chorale", "trecento"),
          "min_tracks": 2, "quiet": True}
    one = music.ensure_builtin(tmp_path / "a", workers=1, **kw)
    two = music.ensure_builtin(tmp_path / "b", workers=2, **kw)
    assert _manifest(one) == _manifest(two)
    for r in _manifest(one):
        assert (one / r["file"]).read_bytes() == (two / r["file"]).read_bytes()
    other = music.ensure_builtin(tmp_path / "c", workers=2, **{**kw, "seed": 4})
    assert [r["source"] for r in _manifest(other)] != [r["source"] for r in _manifest(one)]


def test_a_truncated_music21_parse_cache_does_not_change_the_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    import music21
    from music21 import converter

    unit = music.candidates("chorale")[0]
    before = music.render_unit(unit, seed=0, seconds=2.0)
    assert not before["error"]
    # music21's pickled parse of this score, cut short (a killed run, or a worker reading it
    # while another writes it), in the scratch folder music21 would read it from.
    monkeypatch.setattr(converter.environLocal, "getRootTempDir", lambda: tmp_path)
    source = Path(music21.__file__).parent / "corpus" / unit.path
    pickle = converter.PickleFilter(source, False, unit.number).getPickleFp(tmp_path, "gz")
    pickle.write_bytes(gzip.compress(b"x" * 10_000)[:200])
    assert pickle.stat().st_mtime > source.stat().st_mtime  # music21 would prefer it
    after = music.render_unit(unit, seed=0, seconds=2.0)
    assert after["error"] == ""
    assert np.array_equal(after["audio"], before["audio"])


def test_a_score_seen_twice_is_kept_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = music.candidates

    def with_duplicate(style: str) -> list[music.Unit]:
        units = real(style)[:3]
        return [units[0], music.Unit(style, units[0].path, units[0].number), *units[1:]]

    monkeypatch.setattr(music, "candidates", with_duplicate)
    root = music.ensure_builtin(tmp_path, tracks_per_class=3, seconds=2.0, seed=0, workers=2,
                                classes=("chorale",), min_tracks=3, quiet=True)
    rows = _manifest(root)
    assert len(rows) == 3 and len({r["source"] for r in rows}) == 3
    with open(root / "skipped.csv") as f:
        skipped = list(csv.DictReader(f))
    assert [s["reason"] for s in skipped] == ["duplicate score"]


def test_no_single_global_cue_separates_the_classes(music_sample: Path) -> None:
    """Level and the loudest frequency alone stay near chance (1/8)."""
    level: dict[str, list[float]] = {}
    peak: dict[str, list[float]] = {}
    for r in _manifest(music_sample):
        w, sr = sf.read(music_sample / r["file"])
        level.setdefault(r["class"], []).append(float(np.sqrt(np.mean(w**2))))
        spectrum = np.abs(np.fft.rfft(w))
        peak.setdefault(r["class"], []).append(float(np.argmax(spectrum) * sr / len(w)))
    assert nearest_centroid_accuracy(level) < 0.3
    assert nearest_centroid_accuracy(peak) < 0.3


def _program_profile_accuracy(bags: dict[str, list[set[int]]]) -> float:
    """Leave-one-out accuracy of naming a track's class from the General MIDI programs it
    plays. Each class's profile is how its other tracks' programs spread over the pool
    (normalised to sum to 1), and a track goes to the class whose profile gives its programs
    the most weight. Normalising compares which instruments a class uses, not how many: a
    monophonic folk tune plays one program, a four-part chorale up to four, and that count is
    the score's texture, not an instrument. Ties count as the share a random pick among the
    tied classes would get right."""
    pool = sorted({p for tracks in bags.values() for bag in tracks for p in bag})
    hits, total = 0.0, 0
    for genre, tracks in bags.items():
        for i, bag in enumerate(tracks):
            score = {}
            for g, others in bags.items():
                used = np.array([sum(p in b for j, b in enumerate(others) if (g, j) != (genre, i))
                                 for p in pool], dtype=float)
                profile = used / used.sum()
                score[g] = sum(profile[pool.index(p)] for p in bag)
            top = max(score.values())
            tied = [g for g, s in score.items() if np.isclose(s, top)]
            hits += (genre in tied) / len(tied)
            total += 1
    return hits / total


def test_no_instrument_marks_a_class(music_sample: Path) -> None:
    """Every class draws its instruments from the one pool: which programs a track plays says
    no more about its class than chance."""
    bags: dict[str, list[set[int]]] = {}
    for r in _manifest(music_sample):
        programs = set(map(int, r["programs"].split()))
        assert programs and programs <= set(music.PROGRAMS), r
        bags.setdefault(r["class"], []).append(programs)
    n = sum(map(len, bags.values()))
    chance = 1 / len(bags)
    # With no instrument marking a class, the hits are roughly Binomial(n, chance). Leave-one-out
    # profiles and ties spread them wider than that (this sample with its labels shuffled: sd
    # 0.066, not 0.052), so 4 binomial standard deviations: 0.33 for 8 classes x 5 tracks, about
    # the 99th percentile of those shuffles. A program added to every track of its class scores
    # 0.56 here, and a program per class 1.0.
    limit = chance + 4 * np.sqrt(chance * (1 - chance) / n)
    accuracy = _program_profile_accuracy(bags)
    assert accuracy < limit, (accuracy, limit, bags)


def test_missing_packages_name_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tinysoundfont", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"tinysoundfont.*raygenre\[music\]"):
        data_root("builtin:music", tmp_path)
    assert not (tmp_path / "builtin").exists()


def test_unknown_builtin_set_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="builtin:nope.*builtin:music"):
        data_root("builtin:nope", tmp_path)


@pytest.mark.slow
def test_a_sweep_runs_on_the_real_music_set(tmp_path: Path) -> None:
    """The command a user runs: the set rendered on first use, then a sweep on all 8 classes."""
    from .conftest import run_cli

    args = ["best", "--smoke", "--data", "builtin:music", "--results", str(tmp_path / "r"),
            "--storage", str(tmp_path / "s"), "--cache", str(tmp_path / "cache")]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[data] rendering the real-music set" in proc.stdout
    summary = (tmp_path / "r" / "best-smoke" / "summary.md").read_text()
    assert "`builtin:music`" in summary and "8 genres" in summary
    with open(tmp_path / "r" / "best-smoke" / "trials.csv") as f:
        assert {t["status"] for t in csv.DictReader(f)} == {"completed"}
    again = run_cli([*args, "--fresh"], tmp_path)  # rendered once: the cache serves it
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "rendering" not in again.stdout
