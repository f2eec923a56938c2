"""From an audio folder to a prepared data set: discover, decode, split, segment, cache.

Layout read: `<root>/<genre>/<file>` with .au .wav .flac .ogg .mp3 (decoded by soundfile; torchaudio
only resamples). Each track's segments all land in one split, so a model is never validated on
another 5 s of a song it trained on. The prepared set lives in `<cache>/prepared/<key>/`, the key
hashing the file list (path, size, mtime) and every setting that changes the output.

Each split is one uncompressed Arrow IPC file (`train.arrow`, ...) in blocks of ~BLOCK_BYTES:
reading needs no decoding. Parquet (PREP_VERSION 1) took 2.1 s to decode the built-in train
split before every sweep; the Arrow file is read in 0.1 s, for 5 % more disk (audio samples
hardly compress). `pyarrow.ipc.open_file` (or pandas' `read_feather`) opens it.

This module knows no Ray: a sweep puts these files' blocks into Ray's object store and reads
them back in trials through `raygenre.sweep.feed`.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import soundfile as sf
import torch

from raygenre.config import Config
from raygenre.data.splits import (
    GROUPS_FILE,
    GTZAN_WARNING,
    SplitLists,
    Track,
    apply_split_lists,
    duplicates,
    groups_digest,
    keep_together,
    looks_like_gtzan,
    read_groups,
    split_by_group,
)
from raygenre.deps import torchaudio
from raygenre.errors import DataError
from raygenre.storage import Location, StorageError

AUDIO_EXTS = (".au", ".wav", ".flac", ".ogg", ".mp3")
SPLITS = ("train", "val", "test")
# Bump when the prepared format changes: it is part of the cache key.
PREP_VERSION = 2


# What soundfile raises for a file it cannot decode (LibsndfileError is a RuntimeError; a
# cut-off header can surface as a ValueError or EOFError). Anything else, such as a TypeError,
# is a bug in raygenre and is raised as such, not reported as a bad file.
DECODE_ERRORS = (RuntimeError, ValueError, EOFError, OSError)


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as e:
        raise DataError(f"cannot read folder {folder} ({e.strerror or e}); check its "
                        f"permissions") from e


def _kind(p: Path) -> str:
    """'dir', 'file', 'loop' (a symbolic link that never resolves) or 'other'."""
    try:
        if p.is_symlink():
            p.resolve(strict=True)
        return "dir" if p.is_dir() else "file" if p.is_file() else "other"
    except RuntimeError:  # Path.resolve raises this on a symlink loop
        return "loop"
    except OSError:
        return "loop" if p.is_symlink() else "other"


def discover(root: str | os.PathLike) -> tuple[list[Track], list[tuple[str, str]]]:
    """Audio tracks under `root`, sorted, and (path, reason) for what was set aside.

    Hidden entries and files without an audio extension are ignored without a word (GTZAN
    copies carry .DS_Store, README files and the like); broken links are reported.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"data path {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data path {root} is not a folder (expected <root>/<genre>/<file>)")
    skipped: list[tuple[str, str]] = []
    tracks: list[Track] = []
    loose = 0
    for entry in _entries(root):
        if entry.name.startswith("."):
            continue
        kind = _kind(entry)
        if kind == "loop":
            skipped.append((str(entry), "symbolic link loop or broken link; ignored"))
        elif kind == "file" and entry.suffix.lower() in AUDIO_EXTS:
            loose += 1
        elif kind == "dir":
            files = []
            for f in _entries(entry):
                if f.name.startswith(".") or f.suffix.lower() not in AUDIO_EXTS:
                    continue
                fk = _kind(f)
                if fk == "file":
                    files.append(f)
                elif fk == "loop":
                    skipped.append((str(f), "symbolic link loop or broken link; ignored"))
            if not files:
                skipped.append((str(entry), "genre folder holds no audio files; genre left out"))
            tracks += [Track(entry.name, f, f"{entry.name}/{f.name}") for f in files]
    genres = sorted({t.genre for t in tracks})
    if len(genres) < 2:
        if loose and not genres:
            found = (f"{loose} audio file(s) lie directly in it but no genre folder holds any; "
                     f"put each genre's files in <root>/<genre>/")
        else:
            found = (f"only genre {genres[0]!r} has audio files" if genres
                     else "no genre folder with audio files")
        raise DataError(f"data path {root}: {found}; expected at least two "
                        f"<root>/<genre>/ folders holding {', '.join(AUDIO_EXTS)} files")
    return tracks, skipped


def split_tracks(tracks: list[Track], seed: int, val_fraction: float,
                 test_fraction: float) -> dict[str, str]:
    """track_id -> split, 80/10/10 (by default) inside each genre, deterministic in `seed`.

    Each genre gets at least one validation and one test track, so no split is silently empty;
    a genre with fewer than three tracks is an error.
    """
    by_genre: dict[str, list[str]] = {}
    for t in tracks:
        by_genre.setdefault(t.genre, []).append(t.track_id)
    out: dict[str, str] = {}
    for genre, ids in sorted(by_genre.items()):
        ids = sorted(ids)
        n = len(ids)
        n_val = max(1, round(n * val_fraction))
        n_test = max(1, round(n * test_fraction))
        if n - n_val - n_test < 1:
            raise DataError(f"genre {genre!r} has {n} track(s); each genre needs at least 3 "
                            f"(one each for train, val and test). Add tracks or remove the folder.")
        # A stream per genre: adding a track to one genre leaves the others' splits unchanged.
        random.Random(f"{seed}:{genre}").shuffle(ids)
        for i, tid in enumerate(ids):
            out[tid] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    return out


def load_audio(path: str | os.PathLike, sample_rate: int, raw: bytes | None = None
               ) -> np.ndarray:
    """Mono float32 at `sample_rate`, from the file or from its bytes `raw` when the caller has
    read them already. Raises DataError naming the file if it cannot be decoded."""
    if (len(raw) if raw is not None else os.path.getsize(path)) == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        source = io.BytesIO(raw) if raw is not None else str(path)
        data, sr = sf.read(source, dtype="float32", always_2d=True)
    except DECODE_ERRORS as e:  # what libsndfile says of a file it cannot read
        raise DataError(f"{path}: cannot decode audio ({type(e).__name__}: {e})") from e
    if not np.isfinite(data).all():
        raise DataError(f"{path}: holds NaN or infinite samples")
    mono = data.mean(axis=1)
    if sr != sample_rate:
        mono = torchaudio.functional.resample(torch.from_numpy(mono), sr, sample_rate).numpy()
    return np.ascontiguousarray(mono, dtype=np.float32)


def segment(wave: np.ndarray, length: int) -> np.ndarray:
    """Non-overlapping segments of `length` samples; the remainder is dropped."""
    k = len(wave) // length
    return wave[: k * length].reshape(k, length)


@dataclass(frozen=True)
class Prepared:
    """A prepared data set on disk, and what the sweep needs to know of it."""

    path: Path
    genres: tuple[str, ...]
    segment_samples: int
    counts: dict[str, int]  # segments per split
    reused: bool
    split: str = "random by track"  # how tracks were assigned to splits, in words
    # Storage folders (--storage) that keep this set's test ledger besides the cache
    # (raygenre.data.ledger.at); the sweep adds its own.
    ledger_at: tuple[str, ...] = ()

    def split_path(self, split: str) -> Path:
        return self.path / f"{split}.arrow"

    @property
    def report_path(self) -> Path:
        return self.path / "data_report.csv"

    @property
    def table_path(self) -> Path:
        return self.path / "split_table.md"


def _cache_key(root: Path, tracks: list[Track], settings: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"version": PREP_VERSION, "settings": settings}, sort_keys=True).encode())
    for t in tracks:
        st = t.path.stat()
        h.update(f"{t.track_id}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def prepare(root: str | os.PathLike, cache_dir: str | os.PathLike, cfg: Config,
            max_tracks_per_genre: int | None = None, max_segments_per_track: int | None = None,
            log: Callable[[str], None] = print, shared: Location | None = None,
            split: SplitLists | None = None, generated: bool = False) -> Prepared:
    """Prepare (or reuse) the data set for `root` under these settings.

    `max_tracks_per_genre` / `max_segments_per_track` take a deterministic sample (for smoke runs).
    `shared`: a cache folder in a bucket: a data set prepared by any machine is fetched from
    there, and one prepared here is put there, so it is prepared once, not once per machine.
    `split`: fixed split lists (splits.py); without them, a random split by track from the seed
    that keeps byte-identical files together, and the tracks of a group together where the
    folder has a groups.csv (splits.py).
    `generated`: the tracks were generated each on its own (a built-in set), so they share no
    artist and a random split leaks nothing: no GTZAN warning, whatever the layout.
    """
    root = Path(root).resolve()
    tracks, skipped = discover(root)
    groups, group_notes = read_groups(root, tracks) if split is None else (None, [])
    settings = {"split": split.digest if split is not None else "random",
                "sample_rate": cfg.sample_rate, "segment_seconds": cfg.segment_seconds,
                "val_fraction": cfg.val_fraction, "test_fraction": cfg.test_fraction,
                "seed": cfg.seed, "max_tracks_per_genre": max_tracks_per_genre,
                "max_segments_per_track": max_segments_per_track}
    if groups is not None:  # (absent otherwise: a folder without groups keeps its old key)
        settings["groups"] = groups_digest(groups)
    if max_tracks_per_genre:
        settings["sample_of"] = "usable tracks"  # (earlier samples were drawn before checking)
    key = _cache_key(root, tracks, settings)
    out = Path(cache_dir).resolve() / "prepared" / key
    leaky = not generated and split is None and groups is None and looks_like_gtzan(tracks)
    if leaky:  # every time, reused or not: it is about the figures this sweep will give
        log(f"[data] WARNING: {GTZAN_WARNING}")
    remote = shared / "prepared" / key if shared is not None else None
    if (out / "meta.json").exists():
        prepared = _load_meta(out, reused=True)
        log(f"[data] reusing prepared data {out} (same files and settings)")
        if remote is not None and not (remote / "meta.json").exists():
            # Prepared here before, without this bucket (or by a run that died before sharing
            # it): share it now, or every other machine would prepare it again.
            _share(out, remote, log)
        if leaky and GTZAN_WARNING not in prepared.split:  # prepared before the warning
            prepared = replace(prepared, split=_warned(prepared.split))
        elif not leaky and GTZAN_WARNING in prepared.split:  # a built-in set warned of wrongly
            prepared = replace(prepared, split=prepared.split.replace(
                f"; warning: {GTZAN_WARNING}", ""))
        return prepared
    if remote is not None and (remote / "meta.json").exists():
        tmp = Path(str(out) + f".tmp{os.getpid()}")
        remote.download(tmp)
        try:
            tmp.rename(out)
        except OSError:  # a concurrent fetch or preparation won: its files are identical
            shutil.rmtree(tmp, ignore_errors=True)
        log(f"[data] fetched prepared data {remote} -> {out} (same files and settings)")
        return _load_meta(out, reused=True)

    seg_len = int(round(cfg.segment_seconds * cfg.sample_rate))
    sampled = f" (a sample of up to {max_tracks_per_genre} per genre is kept)" \
        if max_tracks_per_genre else ""
    log(f"[data] preparing {len(tracks)} tracks from {root} -> {out}{sampled}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(out) + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as e:
        raise DataError(f"cache folder {out.parent} is not writable ({e}); "
                        f"choose another with --cache") from e
    notes: list[tuple[str, str]] = []  # files used (or listed), with a word on them
    try:
        # Pass 1: which tracks are usable, over the whole folder even when only a sample is
        # kept (a smoke run is how a new folder gets checked). The split is drawn over usable
        # tracks alone, so a corrupt file can never leave a genre's validation or test split
        # silently empty.
        usable, digests = [], {}
        for t in tracks:
            # Read once: the bytes are both decoded and hashed (to find byte-identical files).
            raw = t.path.read_bytes()
            digests[t.track_id] = hashlib.sha256(raw).hexdigest()
            reason = _unusable(t.path, raw, cfg.sample_rate, seg_len, cfg.segment_seconds)
            if reason:
                skipped.append((str(t.path), reason))
            else:
                usable.append(t)
        if not usable:
            raise DataError(f"data path {root}: no usable audio file")
        if split is not None:
            split_of, listed_notes = apply_split_lists(tracks, split)
            notes += [n for n in listed_notes if n[0] not in {p for p, _ in skipped}]
            usable = [t for t in usable if t.track_id in split_of]
            if max_tracks_per_genre:
                usable = _sample_each_split(usable, split_of, max_tracks_per_genre)
            how = f"fixed lists ({split.source})"
        else:
            if max_tracks_per_genre:
                usable = _sample(usable, max_tracks_per_genre, groups)
            dup_of = duplicates(usable, digests)
            notes += [(str(t.path), f"byte-identical to {dup_of[t.track_id]}: kept, in the "
                                    f"same split as it") for t in usable if t.track_id in dup_of]
            train = 1 - cfg.val_fraction - cfg.test_fraction
            shares = f"{train:.0%}/{cfg.val_fraction:.0%}/{cfg.test_fraction:.0%}"
            if groups is not None:
                notes += group_notes
                # A copy joins its original's group, and so its split.
                joined = {t.track_id: groups[dup_of.get(t.track_id, t.track_id)]
                          for t in usable}
                split_of = split_by_group(usable, joined, cfg.seed, cfg.val_fraction,
                                          cfg.test_fraction)
                how = (f"random by group ({len(set(joined.values()))} groups in "
                       f"{GROUPS_FILE}) inside each genre ({shares} of tracks as nearly as "
                       f"whole groups allow, seed {cfg.seed}), byte-identical files kept "
                       f"together")
            else:
                split_of = keep_together(split_tracks(usable, cfg.seed, cfg.val_fraction,
                                                      cfg.test_fraction), dup_of)
                how = (f"random by track inside each genre ({shares}, seed {cfg.seed}), "
                       f"byte-identical files kept together")
                if leaky:
                    how = _warned(how)
        if not usable:
            raise DataError(f"data path {root}: no usable audio file is in the split lists")
        counts, table = _write_splits(tmp, usable, split_of, cfg, seg_len,
                                      max_segments_per_track)
        missing = [s for s in SPLITS if not counts[s]]
        if missing:
            raise DataError(f"data path {root}: the {' and '.join(missing)} split(s) hold no "
                            f"usable track")
    except DataError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not skipped:
            raise
        report = out.parent / f"{key}.data_report.csv"
        _write_report(report, skipped + notes)
        raise DataError(f"{e} ({len(skipped)} file(s) were set aside as unusable; "
                        f"file and reason for each in {report})") from e
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno != errno.ENOSPC:
            raise
        free = shutil.disk_usage(out.parent).free / 2**20
        raise DataError(f"cache folder {out.parent}: the disk filled up while the prepared "
                        f"set was written ({free:.0f} MB free now that the partial copy is "
                        f"removed); free some space or choose another folder with --cache"
                        ) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    genres = tuple(table)
    _write_report(tmp / "data_report.csv", skipped + notes)
    (tmp / "split_table.md").write_text(split_table(table))
    meta = {"root": str(root), "genres": list(genres), "segment_samples": seg_len,
            "counts": counts, "settings": settings, "skipped": len(skipped), "split": how,
            "notes": len(notes),
            # The test split by content, the key of its ledger (raygenre.data.ledger).
            "test_digests": {t.track_id: digests[t.track_id] for t in usable
                             if split_of[t.track_id] == "test"}}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        tmp.rename(out)
    except OSError:  # a concurrent preparation won: its output is identical
        shutil.rmtree(tmp, ignore_errors=True)
    if skipped or notes:
        log(f"[data] {len(skipped)} file(s) skipped, {len(notes)} noted (duplicates, split "
            f"lists); file and reason for each in {out / 'data_report.csv'}")
    log(f"[data] split: {how}")
    if remote is not None:
        _share(out, remote, log)
    return _load_meta(out, reused=False)


# What a prepared set is, file by file: what `_share` puts in a bucket. Not the whole folder: a
# machine's own records beside the set (the test ledger) are not the set and are not shared.
PREPARED_FILES = (*(f"{s}.arrow" for s in SPLITS), "data_report.csv", "split_table.md",
                  "meta.json")


def _share(out: Path, remote: Location, log: Callable[[str], None]) -> None:
    """Put the prepared set in `out` into the bucket folder `remote`, meta.json last: its
    presence is what tells other machines the folder is complete. A bucket that refuses is an
    error naming --cache; the set stays prepared here."""
    try:
        for name in PREPARED_FILES:  # meta.json is last
            (remote / name).put_file(out / name)
    except OSError as e:
        raise StorageError(f"--cache {remote.parent.parent}: cannot put the prepared data in "
                           f"the bucket ({type(e).__name__}: {e}); it is prepared here, in "
                           f"{out}, and nothing else was lost") from e
    log(f"[data] prepared data shared at {remote}")


def _sample_each_split(tracks: list[Track], split_of: dict[str, str],
                       per_genre: int) -> list[Track]:
    """A smoke sample of fixed split lists: per genre, the first tracks of each split (one
    for val and test, the rest of `per_genre` for train), so no split is left empty."""
    want = {"train": max(1, per_genre - 2), "val": 1, "test": 1}
    kept: dict[tuple[str, str], int] = {}
    out = []
    for t in tracks:
        k = (t.genre, split_of[t.track_id])
        kept[k] = kept.get(k, 0) + 1
        if kept[k] <= want[k[1]]:
            out.append(t)
    return out


def _sample(tracks: list[Track], per_genre: int,
            groups: dict[str, str] | None = None) -> list[Track]:
    """The first `per_genre` tracks of each genre, in name order: the same sample every time.
    With groups, each group's first track comes before any group's second, so a smoke
    sample's split by group has groups to draw (three movements of one quartet have not)."""
    seen: set[tuple[str, str]] = set()
    later: set[str] = set()
    for t in tracks:
        if groups is not None:
            g = (t.genre, groups[t.track_id])
            if g in seen:
                later.add(t.track_id)
            seen.add(g)
    kept: dict[str, int] = {}
    chosen = set()
    for t in sorted(tracks, key=lambda t: t.track_id in later):  # stable: name order kept
        kept[t.genre] = kept.get(t.genre, 0) + 1
        if kept[t.genre] <= per_genre:
            chosen.add(t.track_id)
    return [t for t in tracks if t.track_id in chosen]


def _unusable(path: Path, raw: bytes, sample_rate: int, seg_len: int,
              seconds: float) -> str | None:
    """Why a file cannot give a segment, or None. Decodes it whole: a file corrupt halfway
    through must be caught here, not while writing."""
    try:
        wave = load_audio(path, sample_rate, raw)
    except DataError as e:
        return str(e).split(": ", 1)[-1]
    if len(wave) < seg_len:
        return f"shorter than one {seconds:g}-s segment ({len(wave) / sample_rate:.2f} s)"
    return None


def _write_splits(folder: Path, tracks: list[Track], split_of: dict[str, str], cfg: Config,
                  seg_len: int, max_segments: int | None
                  ) -> tuple[dict[str, int], dict[str, dict[str, list[int]]]]:
    """Decode, segment and write each split's Arrow file; (segments per split, split table)."""
    genres = sorted({t.genre for t in tracks})
    schema = pa.schema([("x", pa.list_(pa.float32(), seg_len)), ("label", pa.int64()),
                        ("track", pa.string()), ("segment", pa.int32())])
    counts = {s: 0 for s in SPLITS}
    table: dict[str, dict[str, list[int]]] = {g: {s: [0, 0] for s in SPLITS} for g in genres}
    # Tracks are written in a seeded random order, so the train file's blocks mix genres and
    # a shuffle buffer smaller than the data set still sees every genre.
    order = list(tracks)
    random.Random(f"{cfg.seed}:order").shuffle(order)
    writers = {s: BlockWriter(folder / f"{s}.arrow", schema, block_rows(seg_len))
               for s in SPLITS}
    try:
        for t in order:
            segs = segment(load_audio(t.path, cfg.sample_rate), seg_len)[:max_segments]
            s, n = split_of[t.track_id], len(segs)
            writers[s].write(pa.table({
                "x": pa.FixedSizeListArray.from_arrays(pa.array(segs.ravel()), seg_len),
                "label": pa.array([genres.index(t.genre)] * n, pa.int64()),
                "track": pa.array([t.track_id] * n, pa.string()),
                "segment": pa.array(np.arange(n, dtype=np.int32)),
            }, schema=schema))
            counts[s] += n
            table[t.genre][s][0] += 1
            table[t.genre][s][1] += n
    finally:
        for w in writers.values():
            w.close()
    return counts, table


class BlockWriter:
    """An Arrow IPC file written in record batches of `rows` rows (the last one shorter): the
    blocks `sweep.feed.ray_dataset` puts in the object store as they are, one `split_batches`
    read each."""

    def __init__(self, path: Path, schema: pa.Schema, rows: int) -> None:
        self.writer = pa.ipc.new_file(str(path), schema)
        self.rows, self.pending, self.held = rows, [], 0

    def write(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.held += table.num_rows
        if self.held >= self.rows:
            whole = pa.concat_tables(self.pending).combine_chunks()
            cut = self.held - self.held % self.rows
            self.writer.write_table(whole.slice(0, cut), max_chunksize=self.rows)
            self.pending = [whole.slice(cut)] if cut < self.held else []
            self.held -= cut

    def close(self) -> None:
        if self.held:
            self.writer.write_table(pa.concat_tables(self.pending).combine_chunks())
        self.writer.close()


def _write_report(path: Path, skipped: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "reason"])
        w.writerows(skipped)


def split_table(table: dict[str, dict[str, list[int]]]) -> str:
    """Markdown: per genre, tracks and segments in each split."""
    lines = ["| genre | train tracks | val tracks | test tracks | train seg | val seg | test seg |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    tot = {s: [0, 0] for s in SPLITS}
    for g, row in table.items():
        lines.append(f"| {g} | " + " | ".join(str(row[s][0]) for s in SPLITS) + " | "
                     + " | ".join(str(row[s][1]) for s in SPLITS) + " |")
        for s in SPLITS:
            tot[s][0] += row[s][0]
            tot[s][1] += row[s][1]
    lines.append("| **all** | " + " | ".join(str(tot[s][0]) for s in SPLITS) + " | "
                 + " | ".join(str(tot[s][1]) for s in SPLITS) + " |")
    return "\n".join(lines) + "\n"


def open_prepared(path: str | os.PathLike) -> Prepared:
    """A prepared set already on disk (a run's summary.md names its folder)."""
    return _load_meta(Path(path), reused=True)


def _warned(how: str) -> str:
    """The split's description with the GTZAN warning: the summary and best.json carry it."""
    return f"{how}; warning: {GTZAN_WARNING}"


def _load_meta(path: Path, reused: bool) -> Prepared:
    meta = json.loads((path / "meta.json").read_text())
    return Prepared(path=path, genres=tuple(meta["genres"]),
                    segment_samples=meta["segment_samples"], counts=meta["counts"],
                    reused=reused, split=meta.get("split", "random by track"))


def read_split(prepared: Prepared, split: str) -> pa.Table:
    """One split as an Arrow table, whole (tests, benchmarks; trials read through Ray Data),
    mapped from its file: pages are read as they are used."""
    return pa.ipc.open_file(pa.memory_map(str(prepared.split_path(split)))).read_all()


def split_batches(prepared: Prepared, split: str, rows: int | None = None,
                  columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """A split's rows in file order, in batches of at most `rows` (default: the file's blocks),
    read a block at a time: memory holds one block, whatever the split's size. (Not mapped:
    every page of a mapped file stays counted in this process's memory until the end.)"""
    path = prepared.split_path(split)
    try:
        reader = pa.ipc.open_file(pa.OSFile(str(path)))
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"{path}: cannot read the prepared {split} split ({e}); delete "
                        f"{prepared.path} and run again to prepare it anew") from e
    for i in range(reader.num_record_batches):
        block = reader.get_batch(i)
        if columns is not None:
            block = block.select(columns)
        step = rows or block.num_rows
        for start in range(0, block.num_rows, step):
            yield block.slice(start, step)


def to_tensor(column: pa.ChunkedArray | pa.Array) -> torch.Tensor:
    """A fixed-size-list column as an (n, length) float32 tensor (one copy, no per-row work)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    flat = np.array(arr.flatten().to_numpy(zero_copy_only=False))  # Arrow memory is read-only
    return torch.from_numpy(flat.reshape(len(arr), arr.type.list_size))


# Rows per object-store block: Ray Data's blocks are best at tens of MB (a 5-s segment is
# 441 KB); much smaller blocks made the first pass over the data ~10x slower.
BLOCK_BYTES = 64 * 2**20


def block_rows(segment_samples: int) -> int:
    """Rows in a block of the prepared files and of the Ray Datasets made from them."""
    return max(1, BLOCK_BYTES // (segment_samples * 4))

