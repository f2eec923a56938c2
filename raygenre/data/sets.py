"""From an audio folder to a prepared data set: discover, check, split, segment, cache.

Each track's segments all land in one split, so a model is never validated on another 5 s of
a song it trained on. The prepared set lives in `<cache>/prepared/<key>/`, the key hashing the
file list (path, size, mtime) and every setting that changes the output; its files are
described in `raygenre.data.prepared`, the audio reading in `raygenre.data.audio`.

`prepare` runs in named steps: `_settings` (what the key hashes), `_reuse` (a set prepared
before, here or in a shared cache), then `_fill`, inside one `atomic_folder`: `_usable` (which
files can be read), `_assign` (which split each track goes to), `_write_splits` (decode,
segment, write), then the report, the table and meta.json; `_failed` turns what went wrong
into an error that names the folder and loses nothing.

This module knows no Ray: a sweep puts these files' blocks into Ray's object store and reads
them back in trials through `raygenre.sweep.feed`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from raygenre.config import Config
from raygenre.data.audio import discover, load_audio, segment, unusable
from raygenre.data.folders import FolderNotCreated, atomic_folder
from raygenre.data.prepared import (
    PREPARED_FILES,
    SPLITS,
    BlockWriter,
    Prepared,
    block_rows,
    load_meta,
    split_table,
    write_report,
)
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
from raygenre.errors import DataError
from raygenre.storage import Location, StorageError

# Bump when the prepared format changes: it is part of the cache key.
PREP_VERSION = 2


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


@dataclass
class _Job:
    """One preparation: what it was asked, and what its steps set aside and note on the way."""

    root: Path
    cfg: Config
    tracks: list[Track]
    skipped: list[tuple[str, str]]  # (file, why it is not used)
    split: SplitLists | None
    groups: dict[str, str] | None
    group_notes: list[tuple[str, str]]
    max_tracks: int | None
    max_segments: int | None
    leaky: bool  # a GTZAN-like folder split at random: its figures carry the warning
    notes: list[tuple[str, str]] = field(default_factory=list)  # files used, with a word

    @property
    def seg_len(self) -> int:
        return int(round(self.cfg.segment_seconds * self.cfg.sample_rate))


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
    leaky = not generated and split is None and groups is None and looks_like_gtzan(tracks)
    job = _Job(root, cfg, tracks, skipped, split, groups, group_notes, max_tracks_per_genre,
               max_segments_per_track, leaky)
    settings = _settings(job)
    key = _cache_key(root, tracks, settings)
    out = Path(cache_dir).resolve() / "prepared" / key
    if leaky:  # every time, reused or not: it is about the figures this sweep will give
        log(f"[data] WARNING: {GTZAN_WARNING}")
    remote = shared / "prepared" / key if shared is not None else None
    reused = _reuse(out, remote, leaky, log)
    if reused is not None:
        return reused
    sampled = f" (a sample of up to {max_tracks_per_genre} per genre is kept)" \
        if max_tracks_per_genre else ""
    log(f"[data] preparing {len(tracks)} tracks from {root} -> {out}{sampled}")
    try:
        with atomic_folder(out, marker="meta.json") as tmp:  # renamed whole, or removed
            how = _fill(job, tmp, settings)
    except (DataError, OSError) as e:
        failure = _failed(e, job, out, key)
        if failure is e:
            raise
        raise failure from e
    if skipped or job.notes:
        log(f"[data] {len(skipped)} file(s) skipped, {len(job.notes)} noted (duplicates, split "
            f"lists); file and reason for each in {out / 'data_report.csv'}")
    log(f"[data] split: {how}")
    if remote is not None:
        _share(out, remote, log)
    return load_meta(out, reused=False)


def _settings(job: _Job) -> dict:
    """Every setting that changes the prepared files: what the cache key hashes besides the
    file list."""
    cfg = job.cfg
    settings = {"split": job.split.digest if job.split is not None else "random",
                "sample_rate": cfg.sample_rate, "segment_seconds": cfg.segment_seconds,
                "val_fraction": cfg.val_fraction, "test_fraction": cfg.test_fraction,
                "seed": cfg.seed, "max_tracks_per_genre": job.max_tracks,
                "max_segments_per_track": job.max_segments}
    if job.groups is not None:  # (absent otherwise: a folder without groups keeps its old key)
        settings["groups"] = groups_digest(job.groups)
    if job.max_tracks:
        settings["sample_of"] = "usable tracks"  # (earlier samples were drawn before checking)
    return settings


def _cache_key(root: Path, tracks: list[Track], settings: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"version": PREP_VERSION, "settings": settings}, sort_keys=True).encode())
    for t in tracks:
        st = t.path.stat()
        h.update(f"{t.track_id}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _reuse(out: Path, remote: Location | None, leaky: bool,
           log: Callable[[str], None]) -> Prepared | None:
    """The set prepared before with this key, here or in the shared cache (fetched); None if
    it must be prepared."""
    if (out / "meta.json").exists():
        prepared = load_meta(out, reused=True)
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
        # (A concurrent fetch or preparation that wins leaves identical files.)
        with atomic_folder(out, marker="meta.json") as tmp:
            remote.download(tmp)
        log(f"[data] fetched prepared data {remote} -> {out} (same files and settings)")
        return load_meta(out, reused=True)
    return None


def _fill(job: _Job, tmp: Path, settings: dict) -> str:
    """Every step that writes the set into `tmp`; the split's description."""
    usable, digests = _usable(job)
    usable, split_of, how = _assign(job, usable, digests)
    counts, table = _write_splits(tmp, usable, split_of, job.cfg, job.seg_len,
                                  job.max_segments)
    missing = [s for s in SPLITS if not counts[s]]
    if missing:
        raise DataError(f"data path {job.root}: the {' and '.join(missing)} split(s) hold no "
                        f"usable track")
    write_report(tmp / "data_report.csv", job.skipped + job.notes)
    (tmp / "split_table.md").write_text(split_table(table))
    meta = {"root": str(job.root), "genres": list(table), "segment_samples": job.seg_len,
            "counts": counts, "settings": settings, "skipped": len(job.skipped), "split": how,
            "notes": len(job.notes),
            # The test split by content, the key of its ledger (raygenre.data.ledger).
            "test_digests": {t.track_id: digests[t.track_id] for t in usable
                             if split_of[t.track_id] == "test"}}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # last: the set is complete
    return how


def _usable(job: _Job) -> tuple[list[Track], dict[str, str]]:
    """The tracks that can be read and give a segment, and every track's content digest.

    Over the whole folder even when only a sample is kept (a smoke run is how a new folder
    gets checked). The split is drawn over usable tracks alone, so a corrupt file can never
    leave a genre's validation or test split silently empty.
    """
    usable, digests = [], {}
    for t in job.tracks:
        # Read once: the bytes are both decoded and hashed (to find byte-identical files).
        raw = t.path.read_bytes()
        digests[t.track_id] = hashlib.sha256(raw).hexdigest()
        reason = unusable(t.path, raw, job.cfg.sample_rate, job.seg_len,
                          job.cfg.segment_seconds)
        if reason:
            job.skipped.append((str(t.path), reason))
        else:
            usable.append(t)
    if not usable:
        raise DataError(f"data path {job.root}: no usable audio file")
    return usable, digests


def _assign(job: _Job, usable: list[Track], digests: dict[str, str]
            ) -> tuple[list[Track], dict[str, str], str]:
    """Which split each kept track goes to: (the kept tracks, track_id -> split, in words)."""
    cfg = job.cfg
    if job.split is not None:
        split_of, listed_notes = apply_split_lists(job.tracks, job.split)
        job.notes += [n for n in listed_notes if n[0] not in {p for p, _ in job.skipped}]
        usable = [t for t in usable if t.track_id in split_of]
        if job.max_tracks:
            usable = _sample_each_split(usable, split_of, job.max_tracks)
        how = f"fixed lists ({job.split.source})"
    else:
        if job.max_tracks:
            usable = _sample(usable, job.max_tracks, job.groups)
        dup_of = duplicates(usable, digests)
        job.notes += [(str(t.path), f"byte-identical to {dup_of[t.track_id]}: kept, in the "
                                    f"same split as it") for t in usable if t.track_id in dup_of]
        train = 1 - cfg.val_fraction - cfg.test_fraction
        shares = f"{train:.0%}/{cfg.val_fraction:.0%}/{cfg.test_fraction:.0%}"
        if job.groups is not None:
            job.notes += job.group_notes
            # A copy joins its original's group, and so its split.
            joined = {t.track_id: job.groups[dup_of.get(t.track_id, t.track_id)]
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
            if job.leaky:
                how = _warned(how)
    if not usable:
        raise DataError(f"data path {job.root}: no usable audio file is in the split lists")
    return usable, split_of, how


def _failed(e: DataError | OSError, job: _Job, out: Path, key: str) -> Exception:
    """What a failed preparation raises, once its partial copy is gone: a data error with the
    report of the files set aside beside the cache, or a full disk named as such."""
    if isinstance(e, FolderNotCreated):
        return DataError(f"cache folder {out.parent} is not writable ({e}); "
                         f"choose another with --cache")
    if isinstance(e, DataError):
        if not job.skipped:
            return e
        report = out.parent / f"{key}.data_report.csv"
        write_report(report, job.skipped + job.notes)
        return DataError(f"{e} ({len(job.skipped)} file(s) were set aside as unusable; "
                         f"file and reason for each in {report})")
    if e.errno != errno.ENOSPC:
        return e
    free = shutil.disk_usage(out.parent).free / 2**20
    return DataError(f"cache folder {out.parent}: the disk filled up while the prepared set "
                     f"was written ({free:.0f} MB free now that the partial copy is removed); "
                     f"free some space or choose another folder with --cache")


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


def _warned(how: str) -> str:
    """The split's description with the GTZAN warning: the summary and best.json carry it."""
    return f"{how}; warning: {GTZAN_WARNING}"
