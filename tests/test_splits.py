"""Fixed split lists (--split), byte-identical files kept in one split, and groups
(groups.csv) kept whole."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from raygenre.config import Config, ConfigError
from raygenre.data.audio import discover
from raygenre.data.prepared import read_split
from raygenre.data.sets import prepare, split_tracks
from raygenre.data.splits import GROUPS_FILE, Track, read_split_lists, split_by_group
from raygenre.errors import DataError


def _report(prepared) -> dict[str, str]:
    with open(prepared.report_path) as f:
        return {Path(r["file"]).name: r["reason"] for r in csv.DictReader(f)}


def _tracks_by_split(prepared) -> dict[str, set[str]]:
    return {s: set(read_split(prepared, s).column("track").to_pylist())
            for s in ("train", "val", "test")}


def _lists(folder: Path, lists: dict[str, list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in lists.items():
        (folder / name).write_text("".join(f"{x}\n" for x in lines))
    return folder


GENRES = ("blues", "jazz", "rock")


def _names(genre: str, ks: range) -> list[str]:
    return [f"{genre}/{genre}.{k:05d}.wav" for k in ks]  # lists name .wav, as GTZAN's do


def test_fixed_lists_are_taken_as_given(gtzan_like: Path, tmp_path: Path) -> None:
    """The "fault-filtered" shape: one list per split, names with .wav where the copy holds
    .au and .flac files too. A listed file that is missing and a file no list names are
    reported; the split is exactly the lists'."""
    lists = {"train_filtered.txt": [n for g in GENRES for n in _names(g, range(0, 6))]
             + ["blues/blues.00099.wav"],  # not in the folder
             "valid_filtered.txt": [n for g in GENRES for n in _names(g, range(6, 8))],
             "test_filtered.txt": [n for g in GENRES for n in _names(g, range(8, 9))]}
    spec = read_split_lists(str(_lists(tmp_path / "lists", lists)))
    p = prepare(gtzan_like, tmp_path / "cache", Config(), split=spec)
    got = _tracks_by_split(p)
    want = {"train": range(0, 6), "val": range(6, 8), "test": range(8, 9)}
    for split, ks in want.items():
        assert {t.split("/")[1].split(".")[1] for t in got[split]} == {f"{k:05d}" for k in ks}
        assert {t.split("/")[0] for t in got[split]} == set(GENRES)
    reasons = _report(p)
    assert "not found under the data root" in reasons["blues.00099.wav"]
    assert all("not in the split file" in reasons[f"{g}.00009{ext}"]
               for g, ext in (("blues", ".wav"), ("jazz", ".wav"), ("rock", ".wav")))
    assert p.split.startswith("fixed lists")
    # Other lists are another prepared data set; the same lists, the same one.
    other = read_split_lists(str(_lists(tmp_path / "other", {
        **lists, "test_filtered.txt": [n for g in GENRES for n in _names(g, range(8, 10))]})))
    assert prepare(gtzan_like, tmp_path / "cache", Config(), split=other).path != p.path
    assert prepare(gtzan_like, tmp_path / "cache", Config(), split=spec).reused


def test_the_other_two_forms_of_split_lists(tmp_path: Path) -> None:
    a = _lists(tmp_path, {"a.txt": ["x/1.wav", "# comment", "x/2.wav"], "b.txt": ["x/3.wav"],
                          "c.txt": ["./x/4.wav"]})
    spec = read_split_lists(f"train={a / 'a.txt'},valid={a / 'b.txt'},test={a / 'c.txt'}")
    assert spec.names == {"x/1.wav": "train", "x/2.wav": "train", "x/3.wav": "val",
                          "x/4.wav": "test"}
    table = tmp_path / "split.tsv"
    table.write_text("file\tsplit\nx/1.wav\ttrain\nx/3.wav\tvalidation\nx/4.wav\ttest\n")
    assert read_split_lists(str(table)).names == {"x/1.wav": "train", "x/3.wav": "val",
                                                  "x/4.wav": "test"}


@pytest.mark.parametrize("content, message", [
    ("file,split\nx/1.wav,train\nx/2.wav,holdout\n", "'holdout' is not a split"),
    ("file,split\nx/1.wav,train\nx/1.wav,test\nx/2.wav,val\n", "listed in both train and test"),
    ("file,split\nx/1.wav,train\nx/2.wav,val\n", "no track is listed for test"),
    ("name,part\nx/1.wav,train\n", "needs a header with a 'file'"),
])
def test_bad_split_files_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "s.csv").write_text(content)
    with pytest.raises(ConfigError, match=message):
        read_split_lists(str(tmp_path / "s.csv"))
    with pytest.raises(ConfigError, match="no such file or folder"):
        read_split_lists(str(tmp_path / "nope.csv"))


def test_byte_identical_files_land_in_one_split(gtzan_like: Path, tmp_path: Path) -> None:
    """Copies of one recording (GTZAN has exact duplicates) are reported and never split
    between training and evaluation."""
    root = tmp_path / "data"
    shutil.copytree(gtzan_like, root)
    for k in range(3):  # three copies of one jazz track, under other names
        shutil.copy(root / "jazz" / "jazz.00000.wav", root / "jazz" / f"jazz.copy{k}.wav")
    seen = set()
    for seed in range(6):  # by chance alone, 4 files of 13 share a split ~half the time
        p = prepare(root, tmp_path / "cache", Config(seed=seed))
        reasons = _report(p)
        for k in range(3):
            assert reasons[f"jazz.copy{k}.wav"] == ("byte-identical to jazz/jazz.00000.wav: "
                                                    "kept, in the same split as it")
        where = {t: s for s, ts in _tracks_by_split(p).items() for t in ts}
        assert {where[f"jazz/jazz.copy{k}.wav"] for k in range(3)} == \
            {where["jazz/jazz.00000.wav"]}
        assert "byte-identical files kept together" in p.split
        # Where a plain random split would have put them: apart, for some seed, or this test
        # would not show anything.
        tracks, _ = discover(root)
        plain = split_tracks(tracks, seed, 0.1, 0.1)
        seen.add(len({plain[f"jazz/jazz.copy{k}.wav"] for k in range(3)}
                     | {plain["jazz/jazz.00000.wav"]}) > 1)
    assert True in seen


def _grouped(sizes: dict[str, list[int]]) -> tuple[list[Track], dict[str, str]]:
    """Tracks of each genre in groups of these sizes, as a work's movements would be."""
    tracks, groups = [], {}
    for genre, ss in sizes.items():
        for gi, size in enumerate(ss):
            for k in range(size):
                tid = f"{genre}/{genre}.w{gi:02d}.{k}.wav"
                tracks.append(Track(genre, Path(tid), tid))
                groups[tid] = f"work{gi}"  # the same name in two genres is two groups
    return tracks, groups


def test_split_by_group_keeps_groups_whole_and_shares_near_80_10_10() -> None:
    # The built-in set's string quartets (16 works: ten of 3-5 movements, six single ones) and
    # a class of mostly single works.
    sizes = {"quartet": [5, 4, 4, 4, 4, 4, 4, 4, 4, 3, 1, 1, 1, 1, 1, 1],
             "folk": [2, 2] + [1] * 44}
    tracks, groups = _grouped(sizes)
    splits_seen = set()
    for seed in range(20):
        split_of = split_by_group(tracks, groups, seed, 0.1, 0.1)
        assert split_of == split_by_group(tracks, groups, seed, 0.1, 0.1)  # deterministic
        assert set(split_of) == {t.track_id for t in tracks}
        where: dict[tuple[str, str], set[str]] = {}
        for t in tracks:
            where.setdefault((t.genre, groups[t.track_id]), set()).add(split_of[t.track_id])
        assert all(len(s) == 1 for s in where.values()), where
        for genre, ss in sizes.items():
            n = sum(ss)
            count = {s: sum(split_of[t.track_id] == s for t in tracks if t.genre == genre)
                     for s in ("val", "test")}
            for s, c in count.items():
                # 10 % of the tracks, or just under where whole groups fall short; never one.
                assert 2 <= c <= round(n * 0.1), (seed, genre, s, c)
                assert c >= round(n * 0.1) - 1, (seed, genre, s, c)
                works = {groups[t.track_id] for t in tracks
                         if t.genre == genre and split_of[t.track_id] == s}
                assert len(works) >= 2, (seed, genre, s, works)  # not one quartet alone
        splits_seen.add(tuple(sorted(split_of.items())))
    assert len(splits_seen) > 10  # the seed draws the split
    # A plain split by track would have cut the quartets: the groups above are a real constraint.
    plain = split_tracks(tracks, 0, 0.1, 0.1)
    assert any(len({plain[t.track_id] for t in tracks if groups[t.track_id] == g
                    and t.genre == "quartet"}) > 1 for g in set(groups.values()))


def test_split_by_group_refuses_a_genre_of_too_few_groups() -> None:
    tracks, groups = _grouped({"a": [3, 3, 3], "b": [6, 6]})
    with pytest.raises(DataError, match=r"genre 'b': its 12 track\(s\) form 2 group"):
        split_by_group(tracks, groups, 0, 0.1, 0.1)


def _copy_with_groups(gtzan_like: Path, root: Path, rows: list[tuple[str, str]]) -> Path:
    shutil.copytree(gtzan_like, root)
    with open(root / GROUPS_FILE, "w", newline="") as f:
        csv.writer(f).writerows([("file", "group"), *rows])
    return root


def test_a_groups_file_keeps_each_group_in_one_split(gtzan_like: Path, tmp_path: Path) -> None:
    """A folder's groups.csv (the built-in real-music set writes its works there): each group
    lands in one split whatever the seed; a track it leaves out is a group of its own; another
    grouping is another prepared set, and the folder without one keeps the split by track."""
    # Jazz tracks 0-3 are one album; 4 and 5 another. Names as lists give them (.wav for .au).
    rows = [(f"jazz/jazz.{k:05d}.wav", "album A") for k in range(4)]
    rows += [(f"jazz/jazz.{k:05d}.wav", "album B") for k in (4, 5)]
    rows += [(f"{g}/{g}.{k:05d}.wav", f"{g}{k}") for g in ("blues", "rock") for k in range(10)]
    rows += [("jazz/jazz.00099.wav", "gone")]
    root = _copy_with_groups(gtzan_like, tmp_path / "data", rows)
    plain_apart = False
    for seed in range(4):
        p = prepare(root, tmp_path / "cache", Config(seed=seed))
        assert p.split.startswith("random by group (26 groups in groups.csv)"), p.split
        where = {t: s for s, ts in _tracks_by_split(p).items() for t in ts}
        for album in (range(4), (4, 5)):
            assert len({where[_jazz(k)] for k in album}) == 1, (seed, album, where)
        tracks, _ = discover(root)
        plain = split_tracks(tracks, seed, 0.1, 0.1)
        plain_apart |= len({plain[_jazz(k)] for k in range(4)}) > 1
    assert plain_apart  # by track, the album would have been cut for some seed
    reasons = _report(p)
    assert reasons["jazz.00099.wav"] == "groups.csv line 28 names no file under the data root: "\
        "ignored"
    assert all(reasons[Path(_jazz(k)).name] == "not in groups.csv: a group of its own"
               for k in range(6, 10))
    # Other groups, another prepared set; the same groups, the same one.
    other = _copy_with_groups(gtzan_like, tmp_path / "other", rows[:3] + rows[4:])
    assert prepare(other, tmp_path / "cache", Config(seed=3)).path != p.path
    assert prepare(root, tmp_path / "cache", Config(seed=3)).reused
    # Without a groups file: the split by track, as before.
    assert prepare(gtzan_like, tmp_path / "cache", Config()).split.startswith("random by track")


def _jazz(k: int) -> str:
    return f"jazz/jazz.{k:05d}{('.wav', '.au', '.flac')[k % 3]}"
