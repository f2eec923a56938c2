"""A prepared data set on disk: its files, and how they are written and read.

Each split is one uncompressed Arrow IPC file (`train.arrow`, ...) in blocks of ~BLOCK_BYTES:
reading needs no decoding. Parquet (PREP_VERSION 1) took 2.1 s to decode the built-in train
split before every sweep; the Arrow file is read in 0.1 s, for 5 % more disk (audio samples
hardly compress). `pyarrow.ipc.open_file` (or pandas' `read_feather`) opens it. Beside them:
`data_report.csv` (files set aside or noted, and why), `split_table.md` and `meta.json`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from raygenre.errors import DataError

SPLITS = ("train", "val", "test")
# What a prepared set is, file by file: what a shared cache holds (`sets._share`). Not the
# whole folder: a machine's own records beside the set (the test ledger) are not the set and
# are not shared. meta.json is last: its presence says the rest is complete.
PREPARED_FILES = (*(f"{s}.arrow" for s in SPLITS), "data_report.csv", "split_table.md",
                  "meta.json")


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


def write_report(path: Path, skipped: list[tuple[str, str]]) -> None:
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
    return load_meta(Path(path), reused=True)


def load_meta(path: Path, reused: bool) -> Prepared:
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
