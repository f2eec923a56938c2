"""The Ray feed: prepared splits into Ray's object store, and back out as a trial's batches.

The driver puts each split's blocks (data/prepared.py's Arrow files) into the object store once per
sweep (`ray_dataset`). A one-worker trial reads them there in place (`HeldSplit`); a
data-parallel trial's Train workers read their shards through Ray Data's iterator
(`torch_batches`). Both give the same batches in the same order for a seed, so a sweep's
numbers do not depend on which runner ran it.

The fast paths here use Ray's private modules only with a Ray `ray_private.checked()` lists;
with any other Ray they take the public API (slower, same batches).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.data
import torch

from raygenre.data.prepared import Prepared, split_batches
from raygenre.errors import DataError
from raygenre.sweep import ray_private

# Rows held for the per-epoch shuffle (~0.45 MB each at 5 s x 22 050 Hz): enough to mix many
# tracks, since prepared files are already in a seeded random track order.
SHUFFLE_BUFFER_ROWS = 512


def torch_batches(source: Any, batch_size: int, shuffle_seed: int | None) -> Iterator[dict]:
    """Batches of {"x", "label"} CPU tensors from a Ray Dataset or a Train worker's shard,
    shuffled through a seeded buffer when `shuffle_seed` is given, the next batch prepared in a
    thread while the model runs. A data-parallel trial's workers read their shards this way; a
    one-worker trial reads the same batches through `HeldSplit`."""
    shuffle = ({} if shuffle_seed is None else
               {"local_shuffle_buffer_size": SHUFFLE_BUFFER_ROWS,
                "local_shuffle_seed": shuffle_seed})
    return source.iter_torch_batches(batch_size=batch_size, prefetch_batches=1, **shuffle)


class HeldSplit:
    """A split of a Ray Dataset read in place from Ray's object store by a one-worker trial,
    batched and shuffled exactly as `torch_batches` (Ray Data's `iter_torch_batches`) would.

    Ray Data's iterator costs a trial ~1.5 s before its first batch (its executor, imports, a
    512-row shuffle buffer filled through Arrow) and ~0.5 s of input work per epoch on the
    built-in split (bench/overhead.py); beside a GPU it was most of an epoch (bench/gpu.py).
    Here the blocks are mapped zero-copy once and each batch is one gather. The order is the
    one Ray's own batcher draws: it is run over row numbers (its shuffle depends on block sizes
    and the seed, never on values), so every number a sweep gives is unchanged bit for bit
    (tests/test_data.py compares the two batch for batch).

    The batcher is one of Ray's private modules: with a Ray it was not checked against
    (`ray_private`), the row numbers come from Ray Data's public iterator instead, over a
    dataset of row numbers laid out in the same blocks. That iterator runs the same batcher,
    so the batches and their order are still Ray Data's (a test forces this path and
    compares it too), at the cost of Ray Data's iterator start every epoch.
    """

    def __init__(self, dataset: Any) -> None:
        # Zero-copy: the tables' buffers are the object store's shared memory, kept mapped
        # while this object holds them; nothing here writes to them (gathers copy).
        self._tables = ray.get(dataset.to_arrow_refs())
        self._x = [_rows_view(t.column("x")) for t in self._tables]
        self._labels = np.concatenate([t.column("label").to_numpy() for t in self._tables])
        self._track = (np.concatenate([t.column("track").to_numpy() for t in self._tables])
                       if "track" in self._tables[0].column_names else None)
        self._block_rows = [t.num_rows for t in self._tables]
        self._starts = np.cumsum([0, *self._block_rows])[:-1]
        # With a Ray the batcher's private module was not checked against, the order comes
        # from Ray Data's public iterator over a dataset of row numbers in the same blocks.
        self._numbers = None if ray_private.checked() else row_numbers(self._block_rows)

    def __len__(self) -> int:
        return int(sum(self._block_rows))

    def batches(self, batch_size: int, shuffle_seed: int | None) -> Iterator[dict]:
        """Batches of {"x", "label", "row"} (and "track" where the split has it) CPU tensors,
        in Ray Data's order for this seed."""
        order = (batch_order(self._block_rows, batch_size, shuffle_seed)
                 if self._numbers is None
                 else iterator_order(self._numbers, batch_size, shuffle_seed))
        for rows in order:
            block = np.searchsorted(self._starts, rows, side="right") - 1
            local = rows - self._starts[block]
            x = np.empty((len(rows), self._x[0].shape[1]), dtype=self._x[0].dtype)
            for b in np.unique(block):
                at = block == b
                x[at] = self._x[b][local[at]]
            # "row": which rows these are, so the loop can hold each one's features.
            yield {"x": torch.from_numpy(x), "label": torch.from_numpy(self._labels[rows]),
                   "row": torch.tensor(rows),
                   **({"track": torch.from_numpy(self._track[rows])}
                      if self._track is not None else {})}


def _rows_view(column: pa.ChunkedArray) -> np.ndarray:
    """A fixed-size-list column as a read-only (rows, length) array over Arrow's memory."""
    arr = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    flat = arr.flatten().to_numpy(zero_copy_only=True)
    return flat.reshape(len(arr), arr.type.list_size)


def batch_order(block_rows: list[int], batch_size: int,
                shuffle_seed: int | None) -> Iterator[np.ndarray]:
    """Row numbers of each batch `torch_batches` yields over blocks of these sizes: Ray Data's
    batcher itself, fed blocks of row numbers in place of the rows. Private Ray modules: only
    with a Ray `ray_private.checked()` (`iterator_order` is the public way)."""
    from ray.data._internal.block_batching.interfaces import ResolvedBlock
    from ray.data._internal.block_batching.util import blocks_to_batches

    starts = np.cumsum([0, *block_rows])
    blocks = (ResolvedBlock(pa.table({"row": np.arange(a, b, dtype=np.int64)}), None)
              for a, b in zip(starts[:-1], starts[1:], strict=True) if b > a)
    shuffle = ({} if shuffle_seed is None else
               {"shuffle_buffer_min_size": SHUFFLE_BUFFER_ROWS, "shuffle_seed": shuffle_seed})
    for batch in blocks_to_batches(blocks, batch_size=batch_size, **shuffle):
        yield batch.data.column("row").to_numpy()


def row_numbers(block_rows: list[int]) -> ray.data.Dataset:
    """A Ray Dataset of one int64 column "row" (0, 1, ...) in blocks of these sizes."""
    starts = np.cumsum([0, *block_rows])
    blocks = [pa.table({"row": np.arange(a, b, dtype=np.int64)})
              for a, b in zip(starts[:-1], starts[1:], strict=True) if b > a]
    # `from_blocks` keeps the blocks as given (the order depends on their sizes) and puts them
    # with no task: in a trial, Ray Data's tasks would wait for CPUs the trials hold.
    numbers = ray.data.from_blocks(blocks)
    # The blocks are read in order, as the splits' datasets are (cluster._set_data_context).
    numbers.context.execution_options.preserve_order = True
    return numbers


def iterator_order(numbers: ray.data.Dataset, batch_size: int,
                   shuffle_seed: int | None) -> Iterator[np.ndarray]:
    """`batch_order` through Ray Data's public iterator: the row numbers of each batch it
    yields over `numbers` (`row_numbers`), shuffled as `torch_batches` shuffles."""
    shuffle = ({} if shuffle_seed is None else
               {"local_shuffle_buffer_size": SHUFFLE_BUFFER_ROWS,
                "local_shuffle_seed": shuffle_seed})
    for batch in numbers.iter_batches(batch_size=batch_size, batch_format="numpy", **shuffle):
        yield batch["row"]


def ray_dataset(prepared: Prepared, split: str) -> ray.data.Dataset:
    """One split as a Ray Dataset in the object store, put there by this process in blocks.

    Putting the file's blocks takes 0.3 s for the built-in train split, where
    `read_parquet(...).materialize()` took 5-8 s (read tasks start worker processes that a
    sweep's trials then wait behind). Peak memory here is one block.
    """
    # Validation carries each segment's track: the loop's vote per track (val/track_acc).
    columns = ["x", "label", *(["track"] if split == "val" else [])]
    tables = (pa.Table.from_batches([b]) for b in split_batches(prepared, split, columns=columns))
    if split == "val":
        tables = _with_track_numbers(tables)
    ds = dataset_of_tables(tables)
    if ds is None:
        raise DataError(f"{prepared.split_path(split)}: the {split} split holds no segment")
    return ds


def _with_track_numbers(tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """`tables` with their "track" names as numbers, the split's tracks numbered in order of
    first appearance (numbers, as Ray's tensor batches hold no strings)."""
    number: dict[str, int] = {}
    for t in tables:
        track = [number.setdefault(n, len(number)) for n in t.column("track").to_pylist()]
        yield t.set_column(t.schema.get_field_index("track"), "track",
                           pa.array(track, pa.int32()))


def dataset_of_tables(tables: Iterable[pa.Table]) -> ray.data.MaterializedDataset | None:
    """`ray.data.from_arrow_refs` over these tables once put, its block metadata computed here
    from the tables in hand: Ray's own runs a task per block for it, which waited ~0.5 s on a
    worker at a sweep's start (the same function, so the same metadata; tests/test_data.py).
    None when there are no tables. That takes Ray's private modules: with a Ray they were not
    checked against (`ray_private`), it is `from_arrow_refs` itself (the same dataset)."""
    if not ray_private.checked():
        put = [ray.put(t) for t in tables]  # one table held at a time, as below
        return ray.data.from_arrow_refs(put) if put else None
    from ray.data import DataContext
    from ray.data._internal.logical.interfaces import LogicalPlan
    from ray.data._internal.logical.operators import FromArrow
    from ray.data._internal.stats import DatasetStats
    from ray.data._internal.util import get_table_block_metadata_schema
    from ray.data.dataset import MaterializedDataset

    refs, metadata = [], []
    for t in tables:
        metadata.append(get_table_block_metadata_schema(t))
        refs.append(ray.put(t))
    if not refs:
        return None
    stats = DatasetStats(metadata={"FromArrow": metadata}, parent=None)
    context = DataContext.get_current().copy()
    return MaterializedDataset(LogicalPlan(FromArrow(refs, metadata), context), context, stats)
