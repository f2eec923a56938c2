"""Fixed split lists (--split) and byte-identical files kept in one split."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from raygenre.config import Config, ConfigError
from raygenre.data import discover, prepare, read_split, split_tracks
from raygenre.splits import read_split_lists


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
