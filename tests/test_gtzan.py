"""GTZAN as its users meet it: the layout is recognised and its random split is warned about;
its unreadable file (jazz.00054) is set aside with a reason while the rest is prepared."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from raygenre.config import Config
from raygenre.data.sets import prepare
from raygenre.data.splits import GTZAN_GENRES, GTZAN_WARNING, read_split_lists

from .conftest import write_clip


def _gtzan(root: Path, genres: frozenset[str] = GTZAN_GENRES, n: int = 3) -> Path:
    for g in sorted(genres):
        for k in range(n):
            write_clip(root / g / f"{g}.{k + 52:05d}.wav", 5.5, seed=k)
    return root


def _prepare(root: Path, cache: Path, **kw: object) -> tuple[object, list[str]]:
    lines: list[str] = []
    return prepare(root, cache, Config(), log=lines.append, **kw), lines


def test_gtzan_layout_without_split_or_groups_is_warned(tmp_path: Path) -> None:
    root = _gtzan(tmp_path / "gtzan")
    p, lines = _prepare(root, tmp_path / "cache")
    warned = [ln for ln in lines if "WARNING" in ln]
    assert len(warned) == 1 and "--split" in warned[0] and "groups.csv" in warned[0]
    assert "fault-filtered" in warned[0]
    assert GTZAN_WARNING in p.split  # what summary.md and best.json say of the split
    again, lines = _prepare(root, tmp_path / "cache")
    assert again.reused and GTZAN_WARNING in again.split
    assert any("WARNING" in ln for ln in lines)


def test_other_layouts_split_lists_and_groups_are_not_warned(tmp_path: Path) -> None:
    other = _gtzan(tmp_path / "other", GTZAN_GENRES - {"rock"} | {"folk"})
    p, lines = _prepare(other, tmp_path / "cache")
    assert not any("WARNING" in ln for ln in lines) and GTZAN_WARNING not in p.split

    root = _gtzan(tmp_path / "gtzan")
    lists = tmp_path / "split.csv"
    with open(lists, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "split"])
        for g in sorted(GTZAN_GENRES):
            for k, s in enumerate(("train", "val", "test")):
                w.writerow([f"{g}/{g}.{k + 52:05d}.wav", s])
    p, lines = _prepare(root, tmp_path / "cache", split=read_split_lists(str(lists)))
    assert not any("WARNING" in ln for ln in lines) and GTZAN_WARNING not in p.split

    with open(root / "groups.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "group"])
        for g in sorted(GTZAN_GENRES):
            for k in range(3):
                w.writerow([f"{g}/{g}.{k + 52:05d}.wav", f"{g}{k}"])
    p, lines = _prepare(root, tmp_path / "cache")
    assert not any("WARNING" in ln for ln in lines) and GTZAN_WARNING not in p.split


def test_unreadable_jazz_00054_is_reported_and_the_rest_prepared(tmp_path: Path) -> None:
    root = _gtzan(tmp_path / "gtzan", n=4)
    (root / "jazz" / "jazz.00054.wav").write_bytes(os.urandom(4000))  # as GTZAN's own copy
    p, _ = _prepare(root, tmp_path / "cache")
    with open(p.report_path) as f:
        reasons = {Path(r["file"]).name: r["reason"] for r in csv.DictReader(f)}
    assert "cannot decode" in reasons["jazz.00054.wav"]
    assert len(p.genres) == 10
    # the other 39 tracks, one segment each
    assert sum(p.counts.values()) == 39


def test_a_generated_set_in_gtzans_layout_is_not_warned(tmp_path: Path) -> None:
    # The built-in set has GTZAN's genres and names, but each track is generated on its own:
    # no artist to leak, so the main job's summary must not carry the warning.
    root = _gtzan(tmp_path / "gtzan")
    p, lines = _prepare(root, tmp_path / "cache", generated=True)
    assert not any("WARNING" in ln for ln in lines) and GTZAN_WARNING not in p.split
    # A cache prepared with the warning (the same files read as a user's GTZAN) loses it when
    # the same folder is read as generated, and keeps it when read as a user's again.
    warned, _ = _prepare(root, tmp_path / "cache2")
    assert GTZAN_WARNING in warned.split
    again, lines = _prepare(root, tmp_path / "cache2", generated=True)
    assert again.reused and GTZAN_WARNING not in again.split
    assert again.split == p.split and not any("WARNING" in ln for ln in lines)
    assert GTZAN_WARNING in _prepare(root, tmp_path / "cache2")[0].split
