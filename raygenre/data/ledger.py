"""The test split's ledger: every read of a test split, kept where the runs live.

A held-out split estimates how a chosen model does on new data only while nothing was chosen by
looking at it; each read that informs a choice (which recipe, how many epochs) biases it, and
the bias grows with the reads (Dwork et al., "The reusable holdout", Science 2015). So the test
split is read in one place (`report.evaluate.predict`), which names its reader and enters the
read here, and every summary says how often its test split has been read.

What a split is: its content, not the folder it was prepared in. The key hashes the sorted test
track ids with each track's audio digest, so deleting the cache, another `--cache`, another
machine, a touched file (a new prepared folder) or other segment settings all find the same
reads. Where the reads are: one small file per read, `test_ledger/<key>/reads/<id>.json`, in
every place the ledger is kept: the `--storage` folder or bucket beside the run folders (it
travels with the runs), and this machine's cache (a sweep into another storage still sees
them). A bucket has no append: one object per read needs none, and concurrent readers each
write their own. Reading merges every place (by read id), copies what a place lacks into it,
imports the prepared folder's old `test_reads.jsonl` (ids derived from its lines, so importing
twice counts once) and the copies kept in results folders' best.json.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raygenre.storage import Location

LEDGER_DIR = "test_ledger"
LEGACY_FILE = "test_reads.jsonl"  # the ledger before it was keyed by content
SPLIT_FILE = "test_split.json"  # a prepared folder's test tracks and digests, computed once


@dataclass(frozen=True)
class TestSplit:
    """A test split by content: track id -> sha256 of its audio file."""

    tracks: dict[str, str]

    @property
    def key(self) -> str:
        body = json.dumps(sorted(self.tracks.items())).encode()
        return hashlib.sha256(body).hexdigest()[:16]

    def shared_with(self, other: TestSplit) -> int:
        """Tracks in both (the same audio, under any id)."""
        return len(set(self.tracks.values()) & set(other.tracks.values()))


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def test_split(prepared_path: str | os.PathLike) -> TestSplit:
    """The prepared set's test split: its track ids from test.arrow, their digests from
    meta.json (written at preparation) or, for a set prepared before, from the audio files
    under the set's root (kept in test_split.json so they are hashed once)."""
    from raygenre.data.prepared import open_prepared, split_batches

    folder = Path(prepared_path)
    meta = json.loads((folder / "meta.json").read_text())
    if "test_digests" in meta:
        return TestSplit(dict(meta["test_digests"]))
    cached = folder / SPLIT_FILE
    if cached.exists():
        return TestSplit(json.loads(cached.read_text())["tracks"])
    ids: set[str] = set()
    for batch in split_batches(open_prepared(folder), "test", columns=["track"]):
        ids.update(batch.column("track").to_pylist())
    root = Path(meta["root"])
    missing = [t for t in sorted(ids) if not (root / t).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder}: prepared before test digests were kept, and its audio folder {root} "
            f"lacks {missing[:3]}{' ...' if len(missing) > 3 else ''}: the test split cannot "
            f"be identified for its ledger; prepare the set again from its audio")
    split = TestSplit({t: _sha(root / t) for t in sorted(ids)})
    with contextlib.suppress(OSError):  # a read-only cache: hash again next time
        Location(str(cached)).write_text(json.dumps({"tracks": split.tracks}, indent=1))
    return split


def places(prepared_path: str | os.PathLike,
           storage: Iterable[Location | str | os.PathLike] = ()) -> list[Location]:
    """Where the ledger is kept: this machine's cache (the folder above `prepared/`) and each
    storage given (beside its run folders)."""
    cache = Path(prepared_path).resolve().parent.parent
    out = [Location(str(cache / LEDGER_DIR))]
    for s in storage:
        loc = Location.parse(s, "--storage") / LEDGER_DIR
        if loc not in out:
            out.append(loc)
    return out


def _entry_id(entry: dict[str, Any]) -> str:
    return str(entry["id"])


def _legacy(prepared_path: Path, key: str) -> list[dict[str, Any]]:
    """The old per-folder file's reads, with ids from their lines (the same line imported
    from two copies of the folder counts once)."""
    path = prepared_path / LEGACY_FILE
    if not path.exists():
        return []
    out, seen = [], {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}:{n}: not a ledger line ({e}); the file is append-only "
                             f"JSON lines: mend or remove that line") from e
        seen[line] = seen.get(line, 0) + 1
        digest = hashlib.sha256(f"{line}\0{seen[line]}".encode()).hexdigest()[:16]
        out.append({**entry, "id": f"legacy-{digest}", "split": key,
                    "imported_from": str(path)})
    return out


class Ledger:
    """One test split's reads, merged from every place it is kept."""

    def __init__(self, prepared_path: str | os.PathLike,
                 storage: Iterable[Location | str | os.PathLike] = (),
                 results: Iterable[str | os.PathLike] = ()) -> None:
        self.prepared_path = Path(prepared_path)
        self.split = test_split(self.prepared_path)
        self.key = self.split.key
        self.places = places(self.prepared_path, storage)
        self.results = [Path(r) for r in results]
        # Each place's reads of a split, listed once per question (a bucket answers each file
        # with a request); every public question starts afresh, since other processes and
        # other Ledger objects (each `evaluate.predict`) write between two.
        self._seen: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}

    def _dir(self, place: Location, key: str | None = None) -> Location:
        return place / (key or self.key)

    def _put(self, place: Location, entry: dict[str, Any]) -> None:
        (self._dir(place, entry["split"]) / "reads" / f"{_entry_id(entry)}.json").write_text(
            json.dumps(entry) + "\n")

    def _put_split(self, place: Location) -> None:
        f = self._dir(place) / SPLIT_FILE
        if not f.exists():
            f.write_text(json.dumps({"key": self.key, "tracks": self.split.tracks}, indent=1))

    def _listed(self, place: Location, key: str) -> dict[str, dict[str, Any]]:
        if (place.uri, key) not in self._seen:
            self._seen[place.uri, key] = self._list(place, key)
        return dict(self._seen[place.uri, key])

    def _list(self, place: Location, key: str) -> dict[str, dict[str, Any]]:
        out = {}
        folder = self._dir(place, key) / "reads"
        for name in folder.listdir():
            if not name.endswith(".json"):
                continue
            f = folder / name
            try:
                entry = json.loads(f.read_text())
            except ValueError as e:
                raise ValueError(f"{f}: not a ledger entry ({e}); each read is one JSON "
                                 f"object: mend or remove that file") from e
            out[_entry_id(entry)] = entry
        return out

    def _from_results(self) -> list[dict[str, Any]]:
        out = []
        for folder in self.results:
            best = folder / "best.json"
            if not best.exists():
                continue
            copy = json.loads(best.read_text()).get("test_ledger") or {}
            if copy.get("split") == self.key:
                out += copy.get("entries", [])
        return out

    def reads(self) -> list[dict[str, Any]]:
        """Every recorded read of this split, oldest first, merged from every place; each
        place is given the reads it lacked, so the next reader of any one finds them all."""
        self._seen.clear()
        found: dict[str, dict[str, Any]] = {}
        held: list[set[str]] = []
        for place in self.places:
            got = self._listed(place, self.key)
            held.append(set(got))
            found.update(got)
        for entry in _legacy(self.prepared_path, self.key) + self._from_results():
            found.setdefault(_entry_id(entry), entry)
        for place, have in zip(self.places, held, strict=True):
            lacking = [e for i, e in found.items() if i not in have]
            if lacking:
                self._put_split(place)
            for entry in lacking:
                self._put(place, entry)
            if lacking:
                self._seen[place.uri, self.key] = {_entry_id(e): e for e in found.values()}
        return sorted(found.values(), key=lambda e: (e.get("time", ""), _entry_id(e)))

    def record(self, reader: str, checkpoint: str) -> int:
        """Enter one read of the test split in every place; returns the reads so far."""
        # The id sorts by time to the nanosecond (reads in one second keep their order) and
        # is unique across machines and threads (one file per read: no two ever share one).
        entry = {"id": f"{time.time_ns():020d}-{uuid.uuid4().hex}",
                 "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "reader": reader,
                 "checkpoint": checkpoint, "command": " ".join(sys.argv),
                 "host": socket.gethostname(), "split": self.key,
                 "prepared": str(self.prepared_path)}
        for place in self.places:
            self._put_split(place)
            self._put(place, entry)
        self._seen.clear()
        return len(self.reads())

    def per_track(self) -> dict[str, int]:
        """Reads of each test track, counting the reads of every other split that holds the
        same audio."""
        counts = {t: 0 for t in self.split.tracks}
        by_digest = {d: t for t, d in self.split.tracks.items()}
        for _key, split, n in self.others(include_self=True):
            for d in split.tracks.values():
                if d in by_digest:
                    counts[by_digest[d]] += n
        return counts

    def others(self, include_self: bool = False) -> list[tuple[str, TestSplit, int]]:
        """(key, split, reads) of every split kept beside this one that has been read."""
        n_self = len(self.reads())  # (lists every place afresh)
        keys: set[str] = set()
        for place in self.places:
            keys.update(k for k in place.listdir() if include_self or k != self.key)
        out = []
        for key in sorted(keys):
            if key == self.key:
                if n_self:
                    out.append((key, self.split, n_self))
                continue
            split, reads = None, {}
            for place in self.places:
                f = self._dir(place, key) / SPLIT_FILE
                if split is None and f.exists():
                    split = TestSplit(json.loads(f.read_text())["tracks"])
                reads.update(self._listed(place, key))
            if split is not None and reads:
                out.append((key, split, len(reads)))
        return out

    def overlaps(self) -> list[tuple[str, int, int]]:
        """(key, tracks shared, its reads) for every other read split sharing test tracks."""
        return [(key, self.split.shared_with(split), n) for key, split, n in self.others()
                if self.split.shared_with(split)]

    def describe(self) -> str:
        """'this test split has been read K times (by N commands)...', for every summary."""
        got = self.reads()
        commands = len({r.get("command") for r in got})
        times = "once" if len(got) == 1 else f"{len(got)} times"
        text = (f"this test split has been read {times} (by {commands} command"
                f"{'s' if commands != 1 else ''}; ledger `{self._dir(self.places[-1])}`, "
                f"split {self.key})")
        for key, shared, n in self.overlaps():
            text += (f"; {shared} of its {len(self.split.tracks)} tracks are also in split "
                     f"{key}, read {n} time{'s' if n != 1 else ''}")
        return text

    def summary(self) -> dict[str, Any]:
        """What best.json keeps: the count, and every read (a copy that travels with the
        results folder)."""
        got = self.reads()
        return {"split": self.key, "tracks": len(self.split.tracks), "reads": len(got),
                "overlaps": [{"split": k, "shared_tracks": s, "reads": n}
                             for k, s, n in self.overlaps()],
                "entries": got}


def _prepared_path(prepared: Any) -> Path:
    return Path(getattr(prepared, "path", prepared))


def _storage(prepared: Any) -> tuple[str, ...]:
    return tuple(getattr(prepared, "ledger_at", ()) or ())


def of(prepared: Any, results: Iterable[str | os.PathLike] = ()) -> Ledger:
    """The ledger of a `Prepared` set (or a prepared folder's path), kept in the cache and
    in every storage the set was handed with (`at`)."""
    return Ledger(_prepared_path(prepared), _storage(prepared), results)


def at(prepared: Any, storage: Location | str | os.PathLike) -> Any:
    """The prepared set, its ledger also kept in `storage` (a sweep's --storage)."""
    from dataclasses import replace

    return replace(prepared, ledger_at=(*_storage(prepared), str(storage)))


def record(prepared: Any, reader: str, checkpoint: str) -> int:
    """Enter one read of this prepared set's test split; returns the reads so far."""
    return of(prepared).record(reader, checkpoint)


def reads(prepared: Any) -> list[dict[str, Any]]:
    """Every recorded read of the set's test split, oldest first ([] for one never read)."""
    return of(prepared).reads()


def describe(prepared: Any) -> str:
    return of(prepared).describe()
