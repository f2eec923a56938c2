"""Bad input: a clear skip in the data report, or a clear error; never a crash or silent loss."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from raygenre.config import Config, ConfigError
from raygenre.data.audio import discover
from raygenre.data.prepared import read_split
from raygenre.data.sets import prepare
from raygenre.errors import DataError
from raygenre.sweep.cli import main

from .conftest import write_clip


def _report(p) -> dict[str, str]:
    with open(p.report_path) as f:
        return {Path(r["file"]).name: r["reason"] for r in csv.DictReader(f)}


def _base(root: Path, n: int = 3, genres: tuple[str, ...] = ("a", "b")) -> Path:
    for g in genres:
        for k in range(n):
            write_clip(root / g / f"{g}.{k:05d}.wav", 5.5, seed=k)
    return root


def test_each_bad_file_is_reported_by_name(tmp_path: Path) -> None:
    root = _base(tmp_path / "d")
    (root / "a" / "garbage.wav").write_bytes(os.urandom(2000))
    (root / "a" / "empty.au").write_bytes(b"")
    good = write_clip(tmp_path / "full.wav", 5.5)
    (root / "b" / "truncated.wav").write_bytes(good.read_bytes()[:30_000])  # header says 5.5 s
    write_clip(root / "b" / "short.flac", 1.0)
    nan = write_clip(root / "b" / "nan.wav", 5.5, subtype="FLOAT")
    data = np.fromfile(nan, dtype=np.uint8)
    data[-400:] = 255  # 0xFFFFFFFF as float32 is NaN
    data.tofile(nan)
    p = prepare(root, tmp_path / "cache", Config())
    reasons = _report(p)
    assert "cannot decode" in reasons["garbage.wav"]
    assert "empty file (0 bytes)" in reasons["empty.au"]
    assert "shorter than one 5-s segment" in reasons["truncated.wav"]
    assert "shorter than one 5-s segment (1.00 s)" in reasons["short.flac"]
    assert "NaN or infinite" in reasons["nan.wav"]
    # 3 good tracks per genre split 1|1|1, one 5-s segment each
    assert p.counts == {"train": 2, "val": 2, "test": 2}


@pytest.mark.parametrize("subtype, channels, sr", [
    ("PCM_U8", 1, 22_050), ("PCM_24", 1, 22_050), ("FLOAT", 1, 22_050), ("PCM_16", 2, 44_100),
    ("PCM_16", 1, 8_000),
])
def test_other_bit_depths_channels_and_rates_are_converted(tmp_path: Path, subtype: str,
                                                           channels: int, sr: int) -> None:
    root = _base(tmp_path / "d")
    write_clip(root / "a" / "odd.wav", 5.5, sr=sr, channels=channels, subtype=subtype)
    p = prepare(root, tmp_path / "cache", Config())
    assert "odd.wav" not in _report(p)
    tracks = {t for s in ("train", "val", "test") for t in read_split(p, s)["track"].to_pylist()}
    assert "a/odd.wav" in tracks


def test_hidden_and_non_audio_files_are_ignored_and_odd_names_work(tmp_path: Path) -> None:
    root = _base(tmp_path / "d")
    (root / "a" / ".DS_Store").write_bytes(b"\0\1")
    (root / "a" / "._a.00000.wav").write_bytes(b"AppleDouble")
    (root / "a" / "notes.txt").write_text("liner notes")
    (root / ".hidden_genre").mkdir()
    write_clip(root / ".hidden_genre" / "x.wav", 5.5)
    write_clip(root / "a" / "mi canción ñ 01.wav", 5.5)
    write_clip(root / "hip hop" / "ünïcode.wav", 5.5)
    for k in range(2):
        write_clip(root / "hip hop" / f"track {k}.wav", 5.5, seed=9 + k)
    tracks, skipped = discover(root)
    names = {t.track_id for t in tracks}
    assert "a/mi canción ñ 01.wav" in names and "hip hop/ünïcode.wav" in names
    assert not any(".DS_Store" in n or "notes" in n or "hidden" in n or "._a" in n
                   for n in names)
    assert skipped == []
    p = prepare(root, tmp_path / "cache", Config())
    used = {t for s in ("train", "val", "test") for t in read_split(p, s)["track"].to_pylist()}
    assert "hip hop/ünïcode.wav" in used


def test_empty_genre_folder_is_reported(tmp_path: Path) -> None:
    root = _base(tmp_path / "d")
    (root / "polka").mkdir()
    (root / "polka" / "readme.txt").write_text("nothing here")
    tracks, skipped = discover(root)
    assert {t.genre for t in tracks} == {"a", "b"}
    assert skipped == [(str(root / "polka"), "genre folder holds no audio files; genre left out")]


def test_one_genre_is_an_error(tmp_path: Path) -> None:
    root = _base(tmp_path / "d", genres=("only",))
    with pytest.raises(DataError, match="only genre 'only' has audio files"):
        discover(root)


def test_files_without_genre_folders_are_an_error(tmp_path: Path) -> None:
    for k in range(4):
        write_clip(tmp_path / f"song{k}.wav", 5.5)
    with pytest.raises(DataError, match="4 audio file\\(s\\) lie directly in it"):
        discover(tmp_path)


def test_symlink_loop_is_reported_not_followed(tmp_path: Path) -> None:
    root = _base(tmp_path / "d")
    os.symlink(root / "a" / "loop.wav", root / "a" / "loop.wav")
    os.symlink(root / "self", root / "self")
    tracks, skipped = discover(root)
    reasons = {Path(f).name: r for f, r in skipped}
    assert "symbolic link loop" in reasons["loop.wav"]
    assert "symbolic link loop" in reasons["self"]
    assert len(tracks) == 6


def test_unreadable_data_path_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _base(tmp_path / "d")

    def denied(self: Path):  # noqa: ANN202 - root ignores chmod, so deny the read itself
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(DataError, match=f"cannot read folder {root}.*Permission denied"):
        discover(root)


def test_read_only_cache_is_a_clear_error(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    root = _base(tmp_path / "d")
    real_mkdir = Path.mkdir

    def read_only(self: Path, *a, **k) -> None:  # noqa: ANN002, ANN003
        if "cache" in str(self):
            raise PermissionError(13, "Read-only file system", str(self))
        real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(DataError, match="cache folder .* is not writable.*--cache"):
        prepare(root, tmp_path / "cache", Config())


def test_a_full_disk_while_preparing_is_a_clear_error_and_leaves_no_partial_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import raygenre.data.sets

    root = _base(tmp_path / "d")
    real = raygenre.data.sets._write_splits

    def fills_the_disk(tmp: Path, *a, **k):  # noqa: ANN002, ANN003, ANN202
        real(tmp, *a, **k)  # the partial copy is on disk when the write fails
        raise OSError(errno.ENOSPC, "Error writing bytes to file. No space left on device")

    monkeypatch.setattr(raygenre.data.sets, "_write_splits", fills_the_disk)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=f"cache folder {cache}.*disk filled up.*--cache"):
        prepare(root, cache, Config())
    assert not list(cache.rglob("*.tmp*")) and not [p for p in cache.rglob("*") if p.is_file()]


def test_nothing_usable_left_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for g in ("a", "b"):
        for k in range(3):
            (root / g).mkdir(parents=True, exist_ok=True)
            (root / g / f"{k}.wav").write_bytes(os.urandom(500))
    with pytest.raises(DataError, match="no usable audio file \\(6 file\\(s\\) were set aside"
                                        ".*data_report.csv"):
        prepare(root, tmp_path / "cache", Config())


def test_a_genre_left_too_small_by_bad_files_is_an_error(tmp_path: Path) -> None:
    root = _base(tmp_path / "d")
    (root / "b" / "b.00000.wav").write_bytes(b"broken")
    with pytest.raises(DataError, match="genre 'b' has 2 track.*1 file\\(s\\) were set aside"):
        prepare(root, tmp_path / "cache", Config())


def test_fuzzed_files_never_crash_and_are_all_accounted_for(tmp_path: Path) -> None:
    """Random bytes and random truncations of valid files: each one is used or reported."""
    rng = np.random.default_rng(0)
    root = _base(tmp_path / "d", n=4)
    valid = {fmt: write_clip(tmp_path / f"v.{fmt}", 6.0, fmt=fmt.upper(),
                             subtype="VORBIS" if fmt == "ogg" else "PCM_16")
             for fmt in ("wav", "flac", "au", "ogg")}
    fuzzed = []
    for i in range(24):
        g = ("a", "b")[i % 2]
        src = list(valid.values())[i % 4]
        if i % 3 == 0:
            blob = rng.bytes(int(rng.integers(0, 5000)))
        else:
            b = src.read_bytes()
            blob = b[: int(rng.integers(0, len(b)))]
            if i % 3 == 2 and blob:  # flip a few bytes too
                arr = bytearray(blob)
                for j in rng.integers(0, len(arr), size=8):
                    arr[j] = int(rng.integers(0, 256))
                blob = bytes(arr)
        name = f"fuzz{i:02d}{src.suffix}"
        (root / g / name).write_bytes(blob)
        fuzzed.append(f"{g}/{name}")
    p = prepare(root, tmp_path / "cache", Config())
    reported = set(_report(p))
    used = {t for s in ("train", "val", "test") for t in read_split(p, s)["track"].to_pylist()}
    for f in fuzzed:
        assert (f in used) != (Path(f).name in reported), f


# --- options, checked before Ray starts ------------------------------------------------------

def test_resume_and_fresh_contradict(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["batch_epoch", "--resume", "--fresh", "--storage", str(tmp_path)]) == 2
    assert "--resume and --fresh contradict" in capsys.readouterr().err


def test_resume_without_a_run_names_the_folder(tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    assert main(["batch_epoch", "--resume", "--storage", str(tmp_path)]) == 2
    assert f"no run of 'batch_epoch' in {tmp_path / 'batch_epoch'}" in capsys.readouterr().err


def test_unknown_grid_lists_the_grids(capsys: pytest.CaptureFixture) -> None:
    assert main(["batch_epochs"]) == 2
    err = capsys.readouterr().err
    assert "unknown grid 'batch_epochs'" in err and "batch_epoch" in err


def test_empty_grid_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty.yaml").write_text("")
    assert main([str(tmp_path / "empty.yaml")]) == 2
    assert "must be a mapping" in capsys.readouterr().err


def test_batch_larger_than_training_split() -> None:
    from raygenre.data.prepared import Prepared
    from raygenre.grid.file import load_grid
    from raygenre.grid.resolved import resolve
    from raygenre.sweep.inputs import check_batch_sizes

    prepared = Prepared(Path("."), ("a", "b"), 10, {"train": 100, "val": 10, "test": 10}, True)
    with pytest.raises(ConfigError, match="batch_size 128 is larger than the training split "
                                          "\\(100 segments\\)"):
        check_batch_sizes(resolve(load_grid("batch_epoch"), "study", None), prepared)


@pytest.mark.parametrize("grid_text, error", [
    ("base: {model: mlp, features: waveform}\ngrid: {ema: [0.99, 1.0]}",
     r"g.yaml: cell .*ema must be in \[0, 1\).*got 1.0"),
    ("grid: {label_smoothing: [0.1, 1.0]}",
     r"g.yaml: cell .*label_smoothing must be in \[0, 1\).*got 1.0"),
    ("grid: {time_crop: [0.5, 1.5]}", r"g.yaml: cell .*time_crop must be in \[0, 1\]"),
])
def test_training_only_knobs_fail_when_the_grid_is_resolved(tmp_path: Path, grid_text: str,
                                                             error: str) -> None:
    """Knobs only the training loop reads are judged with every other value, when the sweep
    is resolved: before any data is prepared, not in the pre-flight build."""
    from raygenre.grid.file import load_grid
    from raygenre.grid.resolved import resolve

    (tmp_path / "g.yaml").write_text(grid_text + "\n")
    with pytest.raises(ConfigError, match=error):
        resolve(load_grid(str(tmp_path / "g.yaml")), "study", None)


def test_time_crop_on_a_model_that_cannot_pool_fails_before_any_trial(tmp_path: Path) -> None:
    from raygenre.data.prepared import Prepared
    from raygenre.grid.file import load_grid
    from raygenre.grid.resolved import resolve
    from raygenre.sweep.inputs import check_models

    (tmp_path / "g.yaml").write_text("base: {features: logmel, time_crop: 0.6}\n"
                                     "grid: {model: [small_cnn, cnn1]}\n")
    prepared = Prepared(Path("."), ("a", "b"), 22_050, {"train": 100, "val": 10, "test": 10},
                        True)
    with pytest.raises(ConfigError, match=r"g.yaml: cell .*model': 'cnn1'.*time_crop 0.6 "
                                          r"needs a model that pools over time"):
        check_models(resolve(load_grid(str(tmp_path / "g.yaml")), "cpu", None), prepared)


def test_smoke_runs_on_a_small_folder_and_checks_all_of_it(tmp_path: Path) -> None:
    """A 4-genre folder of 10 short tracks each: the smoke sample's training split (8
    segments) is smaller than the grid's batches, which a smoke run fits to it, saying so. A
    broken file outside the sample is still reported."""
    from .conftest import run_cli

    root = tmp_path / "small"
    for g in ("a", "b", "c", "d"):
        for k in range(10):
            write_clip(root / g / f"{g}.{k:05d}.wav", 6.0, seed=k)
    good = (root / "d" / "d.00009.wav").read_bytes()
    (root / "d" / "zz_truncated.wav").write_bytes(good[:20_000])  # sorts after the sample
    args = ["batch_epoch", "--smoke", "--data", str(root), "--preset", "cpu", "--results",
            str(tmp_path / "r"), "--storage", str(tmp_path / "s"), "--cache", str(tmp_path / "c")]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "batch sizes capped at the sample's 8 training segments ([16, 20] -> [8])" \
        in proc.stdout
    with open(tmp_path / "r" / "batch_epoch-smoke" / "cells.csv") as f:
        cells = list(csv.DictReader(f))
    assert {c["batch_size"] for c in cells} == {"8"} and len(cells) == 2
    with open(tmp_path / "r" / "batch_epoch-smoke" / "data_report.csv") as f:
        reported = {Path(r["file"]).name: r["reason"] for r in csv.DictReader(f)}
    assert "shorter than one 5-s segment" in reported["zz_truncated.wav"]
    # A full run keeps the clear error (its sample is the whole folder: 8 tracks x 4 train).
    from raygenre.data.prepared import Prepared
    from raygenre.grid.file import load_grid
    from raygenre.grid.resolved import resolve
    from raygenre.sweep.inputs import check_batch_sizes

    with pytest.raises(ConfigError, match="batch_size 64 is larger than the training split"):
        check_batch_sizes(resolve(load_grid("batch_epoch"), "study", None),
                          Prepared(Path("."), ("a",), 10, {"train": 32}, True))


def test_a_decoder_bug_is_raised_not_reported_as_a_bad_file(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    import soundfile

    from raygenre.data.audio import load_audio

    clip = write_clip(tmp_path / "ok.wav", 5.5)

    def broken(*a, **k):
        raise TypeError("a bug in the caller")

    monkeypatch.setattr(soundfile, "read", broken)
    with pytest.raises(TypeError, match="a bug in the caller"):
        load_audio(clip, 22_050)


def test_fresh_that_cannot_delete_says_so(tmp_path: Path, capsys: pytest.CaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    run = tmp_path / "batch_epoch"
    run.mkdir()
    (run / "tuner.pkl").write_bytes(b"x")

    def refuse(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(shutil, "rmtree", refuse)
    assert main(["batch_epoch", "--fresh", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --fresh: cannot delete") and str(run) in err
    assert (run / "tuner.pkl").exists()
