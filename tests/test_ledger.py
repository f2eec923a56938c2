"""The test ledger is the split's, not the cache's: it keeps its reads when the cache is deleted,
on another machine (another cache), after a --fresh start (the results folder's copy), in a
bucket, across concurrent readers, and it says how far a split overlaps one already read."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from raygenre.config import Config
from raygenre.data import ledger
from raygenre.data.sets import prepare
from raygenre.storage import Location

CFG = Config().replace(model="mlp", features="waveform", hidden=(4,))


def _prepare(audio: Path, cache: Path, **changes) -> object:
    return prepare(audio, cache, CFG.replace(**changes), log=lambda _: None)


@pytest.fixture
def audio(builtin_small: Path, tmp_path: Path) -> Path:
    """A copy of the small built-in set this test may touch."""
    return Path(shutil.copytree(builtin_small, tmp_path / "audio"))


def test_the_count_survives_the_cache_another_machine_and_a_touched_file(
        audio: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = ledger.at(_prepare(audio, tmp_path / "cache"), runs)
    first_ledger = ledger.of(first)
    first_ledger.record("a test's first read", "ck1")
    assert first_ledger.record("a test's second read", "ck2") == 2
    shutil.rmtree(tmp_path / "cache")  # as data/sets.py advises for a corrupt cache
    # Another machine: another cache, the files touched (a new prepared folder), other
    # segment settings: the same test tracks, so the same split.
    for track in audio.rglob("*.wav"):
        track.touch()
    again = _prepare(audio, tmp_path / "other_cache", segment_seconds=2.0)
    assert again.path.name != first.path.name
    assert ledger.of(again).key == first_ledger.key
    assert len(ledger.reads(ledger.at(again, runs))) == 2
    # The new cache was given the storage's reads: without the storage it still counts 2.
    assert [r["reader"] for r in ledger.reads(again)] == ["a test's first read",
                                                          "a test's second read"]


def test_a_fresh_start_in_new_storage_keeps_the_results_folders_copy(
        audio: Path, tmp_path: Path) -> None:
    prepared = ledger.at(_prepare(audio, tmp_path / "cache"), tmp_path / "runs")
    ledger.record(prepared, "the first sweep's test read", "ck")
    results = tmp_path / "results" / "best"
    results.mkdir(parents=True)
    (results / "best.json").write_text(json.dumps({"test_ledger": ledger.of(prepared)
                                                   .summary()}))
    shutil.rmtree(tmp_path / "cache")
    # --fresh into another storage, the old one gone.
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)
    later = ledger.at(_prepare(audio, tmp_path / "cache2"), tmp_path / "runs2")
    assert len(ledger.of(later, results=[results]).reads()) == 1
    assert len(ledger.reads(later)) == 1  # merged into the new places, not only counted


def test_old_per_folder_ledgers_are_imported_once(audio: Path, tmp_path: Path) -> None:
    prepared = _prepare(audio, tmp_path / "cache")
    line = json.dumps({"time": "2026-12-01T00:00:00Z", "reader": "old", "checkpoint": "c",
                       "command": "x"})
    (prepared.path / ledger.LEGACY_FILE).write_text(f"{line}\n{line}\n")  # two reads
    assert len(ledger.reads(prepared)) == 2
    assert len(ledger.reads(prepared)) == 2  # imported again: the same two
    # A copy of the old folder in another cache counts the same two reads, not four.
    copy = tmp_path / "cache" / "prepared" / "copied"
    shutil.copytree(prepared.path, copy)
    assert len(ledger.reads(copy)) == 2
    ledger.record(prepared, "new", "ck")
    assert len(ledger.reads(copy)) == 3


def test_concurrent_readers_lose_no_read(audio: Path, tmp_path: Path) -> None:
    prepared = ledger.at(_prepare(audio, tmp_path / "cache"), tmp_path / "runs")
    ledger.reads(prepared)  # the split's digests, once, before the threads
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: ledger.record(prepared, f"reader {i}", "ck"), range(40)))
    assert len(ledger.reads(prepared)) == 40
    assert len(list((tmp_path / "runs" / "test_ledger").glob("*/reads/*.json"))) == 40


def test_a_split_that_overlaps_a_read_one_says_by_how_many_tracks(
        audio: Path, tmp_path: Path) -> None:
    one = _prepare(audio, tmp_path / "cache", seed=1)
    other = _prepare(audio, tmp_path / "cache", seed=2)
    a, b = ledger.of(one), ledger.of(other)
    shared = a.split.shared_with(b.split)
    assert 0 < shared < len(a.split.tracks)  # (the seeds were picked for a partial overlap)
    a.record("read of split 1", "ck")
    a.record("read of split 1 again", "ck")
    assert b.overlaps() == [(a.key, shared, 2)]
    assert f"{shared} of its {len(b.split.tracks)} tracks are also in split {a.key}, read 2 " \
           f"times" in b.describe()
    counts = b.per_track()
    assert sorted(counts.values()).count(2) == shared and max(counts.values()) == 2
    assert b.summary()["reads"] == 0


def test_the_ledger_travels_in_a_bucket(audio: Path, tmp_path: Path, s3,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    bucket = s3.bucket()
    storage = Location.parse(f"s3://{bucket}/runs")
    prepared = ledger.at(_prepare(audio, tmp_path / "cache"), storage)
    ledger.record(prepared, "read on machine A", "ck")
    ledger.record(prepared, "read on machine A again", "ck")
    key = ledger.of(prepared).key
    assert len([k for k in s3.keys(bucket, f"runs/test_ledger/{key}/reads/")]) == 2
    shutil.rmtree(tmp_path / "cache")
    elsewhere = ledger.at(_prepare(audio, tmp_path / "machine_b"), storage)
    assert len(ledger.reads(elsewhere)) == 2
    ledger.record(elsewhere, "read on machine B", "ck")
    assert len(s3.keys(bucket, f"runs/test_ledger/{key}/reads/")) == 3


@pytest.mark.slow
def test_a_sweep_after_the_cache_is_gone_counts_the_earlier_reads(smoke_run: dict,
                                                                   tmp_path: Path) -> None:
    """The issue's case: `batch_epoch --smoke` into one --storage, then again with --fresh
    from another cache (the first one gone, as on another machine): the second summary
    counts the first sweep's read, and its best.json keeps a copy of every read."""
    from .conftest import run_cli

    storage = smoke_run["base"] / "runs"
    before = len(list((storage / ledger.LEDGER_DIR).glob("*/reads/*.json")))
    assert before >= 1  # the first sweep's read of its chosen cell
    (audio,) = (smoke_run["base"] / "cache" / "builtin").iterdir()
    proc = run_cli(["batch_epoch", "--smoke", "--fresh", "--data", str(audio), "--storage",
                    str(storage), "--cache", str(tmp_path / "other_cache"), "--results",
                    str(tmp_path / "results")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    best = json.loads((tmp_path / "results" / "batch_epoch-smoke" / "best.json").read_text())
    assert best["test_reads"] == best["test_ledger"]["reads"] == before + 1
    assert len(best["test_ledger"]["entries"]) == before + 1
    summary = (tmp_path / "results" / "batch_epoch-smoke" / "summary.md").read_text()
    assert f"this test split has been read {before + 1} times" in summary


def test_a_ledger_counts_reads_entered_since_by_others(audio: Path, tmp_path: Path) -> None:
    """The report holds one ledger while `evaluate.predict` enters each read through its own
    (and other processes through theirs): the summary counts them all."""
    prepared = ledger.at(_prepare(audio, tmp_path / "cache"), tmp_path / "runs")
    book = ledger.of(prepared)
    assert book.reads() == []
    ledger.record(prepared, "the evaluation's read", "ck")
    assert book.summary()["reads"] == 1 and "has been read once" in book.describe()
