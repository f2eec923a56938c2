"""atomic_folder: a generated or prepared folder appears whole, with its marker, or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raygenre.data import synth
from raygenre.data.folders import FolderNotCreated, atomic_folder


def _left(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


def test_a_finished_folder_is_renamed_into_place(tmp_path: Path) -> None:
    final = tmp_path / "sets" / "a"  # its parent is made too
    with atomic_folder(final) as tmp:
        assert tmp.parent == final.parent and tmp.name == f"a.tmp{os.getpid()}"
        (tmp / "x.wav").write_bytes(b"123")
        (tmp / "DONE").write_text("{}")
    assert (final / "x.wav").read_bytes() == b"123" and (final / "DONE").is_file()
    assert _left(final.parent) == ["a"]


def test_a_failure_mid_write_leaves_no_partial_folder_and_no_marker(tmp_path: Path) -> None:
    final = tmp_path / "a"
    with pytest.raises(KeyboardInterrupt), atomic_folder(final) as tmp:
        (tmp / "x.wav").write_bytes(b"123")
        raise KeyboardInterrupt  # a run stopped halfway: the error is raised as it came
    assert _left(tmp_path) == []


def test_a_folder_without_its_marker_is_not_kept(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="without its meta.json marker"), \
            atomic_folder(tmp_path / "a", marker="meta.json") as tmp:
        (tmp / "train.arrow").write_bytes(b"...")
    assert _left(tmp_path) == []


def test_a_concurrent_writer_that_finished_first_is_kept(tmp_path: Path) -> None:
    final = tmp_path / "a"
    with atomic_folder(final) as tmp:
        (tmp / "x.wav").write_bytes(b"ours")
        (tmp / "DONE").write_text("ours")
        final.mkdir()  # another process renames its finished folder into place meanwhile
        (final / "x.wav").write_bytes(b"theirs")
        (final / "DONE").write_text("theirs")
    assert (final / "DONE").read_text() == "theirs" and _left(tmp_path) == ["a"]


def test_an_unfinished_folder_in_the_way_is_an_error(tmp_path: Path) -> None:
    final = tmp_path / "a"
    (final / "sub").mkdir(parents=True)  # not empty and no marker: not a finished set
    with pytest.raises(OSError), atomic_folder(final) as tmp:
        (tmp / "DONE").write_text("ours")
    assert _left(tmp_path) == ["a"] and not (final / "DONE").exists()


def test_a_temporary_folder_left_by_a_killed_run_is_cleared(tmp_path: Path) -> None:
    stale = tmp_path / f"a.tmp{os.getpid()}"
    (stale / "old").mkdir(parents=True)
    with atomic_folder(tmp_path / "a") as tmp:
        assert tmp == stale and _left(tmp) == []
        (tmp / "DONE").write_text("")


def test_a_parent_that_cannot_be_written_is_named(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(self: Path, *a, **k) -> None:  # noqa: ANN002, ANN003
        raise PermissionError(13, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(FolderNotCreated, match="Read-only file system"), \
            atomic_folder(tmp_path / "a"):
        pass


def test_an_interrupted_generation_leaves_nothing(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-in set, stopped at its third track: no set folder, no temporary one, and the
    next call generates it whole."""
    real, calls = synth.render_track, []

    def stops(*a, **k):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(synth, "render_track", stops)
    with pytest.raises(KeyboardInterrupt):
        synth.ensure_builtin(tmp_path, tracks_per_genre=2, seconds=1.0, quiet=True)
    assert _left(tmp_path / "builtin") == []
    root = synth.ensure_builtin(tmp_path, tracks_per_genre=2, seconds=1.0, quiet=True)
    assert (root / "DONE").is_file() and len(list(root.rglob("*.wav"))) == 2 * len(synth.GENRES)
