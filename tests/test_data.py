from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from raygenre.config import Config
from raygenre.data.audio import discover, load_audio, segment
from raygenre.data.prepared import BlockWriter, Prepared, read_split, split_batches, to_tensor
from raygenre.data.sets import prepare, split_tracks
from raygenre.errors import DataError

from .conftest import write_clip


def test_discover_reads_gtzan_layout(gtzan_like: Path) -> None:
    tracks, skipped = discover(gtzan_like)
    assert len(tracks) == 30 and not skipped
    assert {t.genre for t in tracks} == {"blues", "jazz", "rock"}
    assert {t.path.suffix for t in tracks} == {".wav", ".au", ".flac"}


def test_split_is_stratified_by_track_and_deterministic(gtzan_like: Path) -> None:
    tracks, _ = discover(gtzan_like)
    a = split_tracks(tracks, seed=1, val_fraction=0.1, test_fraction=0.1)
    b = split_tracks(tracks, seed=1, val_fraction=0.1, test_fraction=0.1)
    c = split_tracks(tracks, seed=2, val_fraction=0.1, test_fraction=0.1)
    assert a == b
    assert a != c
    for genre in ("blues", "jazz", "rock"):
        per = [a[t.track_id] for t in tracks if t.genre == genre]
        assert per.count("train") == 8 and per.count("val") == 1 and per.count("test") == 1


def test_split_refuses_genre_too_small(tmp_path: Path) -> None:
    for g, n in (("a", 5), ("b", 2)):
        for k in range(n):
            write_clip(tmp_path / g / f"{g}.{k:05d}.wav", 5.5)
    tracks, _ = discover(tmp_path)
    with pytest.raises(DataError, match="genre 'b' has 2 track"):
        split_tracks(tracks, 0, 0.1, 0.1)


def test_prepare_keeps_tracks_whole_and_reuses_cache(gtzan_like: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    cfg = Config(seed=3)
    p = prepare(gtzan_like, tmp_path / "cache", cfg)
    assert not p.reused
    assert p.counts == {"train": 48, "val": 6, "test": 6}  # 3 genres x (8|1|1) tracks x 2 segs
    tracks_by_split = {s: set(read_split(p, s)["track"].to_pylist()) for s in p.counts}
    assert not tracks_by_split["train"] & tracks_by_split["val"]
    assert not tracks_by_split["train"] & tracks_by_split["test"]
    assert not tracks_by_split["val"] & tracks_by_split["test"]
    x = to_tensor(read_split(p, "train")["x"])
    assert x.shape == (48, 5 * 22_050) and x.dtype.is_floating_point
    assert "| blues | 8 | 1 | 1 | 16 | 2 | 2 |" in p.table_path.read_text()
    again = prepare(gtzan_like, tmp_path / "cache", cfg)
    assert again.reused and again.path == p.path
    assert "reusing prepared data" in capsys.readouterr().out
    # Other settings, other cache entry.
    other = prepare(gtzan_like, tmp_path / "cache", cfg.replace(segment_seconds=2.0))
    assert other.path != p.path and other.counts["train"] == 8 * 3 * 5


def test_split_files_are_written_in_whole_blocks_in_order(tmp_path: Path) -> None:
    """Tracks of 3 rows into blocks of 4: every record batch but the last holds 4 rows, and
    the rows come back in the order written, whole or in smaller slices."""
    import pyarrow as pa

    schema = pa.schema([("x", pa.list_(pa.float32(), 2)), ("label", pa.int64())])
    w = BlockWriter(tmp_path / "train.arrow", schema, rows=4)
    for t in range(5):
        w.write(pa.table({"x": pa.FixedSizeListArray.from_arrays(
            pa.array(np.arange(6, dtype=np.float32) + 6 * t), 2),
            "label": pa.array([t] * 3, pa.int64())}, schema=schema))
    w.close()
    reader = pa.ipc.open_file(tmp_path / "train.arrow")
    sizes = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
    assert sizes == [4, 4, 4, 3]
    p = Prepared(path=tmp_path, genres=("a",), segment_samples=2, counts={}, reused=False)
    whole = [b["label"].to_pylist() for b in split_batches(p, "train", columns=["label"])]
    assert sum(whole, []) == [t for t in range(5) for _ in range(3)]
    sliced = list(split_batches(p, "train", rows=3))
    assert [b.num_rows for b in sliced] == [3, 1, 3, 1, 3, 1, 3]
    x = to_tensor(pa.concat_arrays([b["x"] for b in sliced]))
    assert x.flatten().tolist() == list(range(30))


def test_unreadable_split_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "val.arrow").write_bytes(b"not an arrow file")
    p = Prepared(path=tmp_path, genres=("a",), segment_samples=2, counts={}, reused=False)
    with pytest.raises(DataError, match="val.arrow: cannot read the prepared val split"):
        next(split_batches(p, "val"))


def test_audio_is_mixed_to_mono_and_resampled(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "x.wav", 2.0, sr=44_100, channels=2)
    wave = load_audio(path, 22_050)
    assert wave.ndim == 1 and abs(len(wave) - 44_100) <= 1 and wave.dtype == np.float32


def test_segment_drops_remainder() -> None:
    assert segment(np.zeros(23, np.float32), 5).shape == (4, 5)


def test_undecodable_file_is_reported_not_fatal(gtzan_like: Path, tmp_path: Path) -> None:
    (gtzan_like / "jazz" / "jazz.00099.wav").write_bytes(b"not audio at all")
    write_clip(gtzan_like / "rock" / "rock.00098.wav", 2.0)  # shorter than a segment
    p = prepare(gtzan_like, tmp_path / "cache", Config())
    rows = list(csv.DictReader(open(p.report_path)))
    reasons = {Path(r["file"]).name: r["reason"] for r in rows}
    assert "cannot decode" in reasons["jazz.00099.wav"]
    assert "shorter than one 5-s segment" in reasons["rock.00098.wav"]


def test_missing_data_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        discover(tmp_path / "nope")


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    import ray.data

    ray.data.DataContext.get_current().execution_options.preserve_order = True
    yield ray
    ray.shutdown()


def _ray_path(private: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the feed's fast path (Ray's private modules) or force its public fallback, as a Ray
    outside the checked versions would (`ray_private`)."""
    from raygenre.sweep import ray_private

    if not private:
        monkeypatch.setattr(ray_private, "checked", lambda: False)
    elif not ray_private.checked():
        pytest.skip("the installed Ray is not one the private fast paths were checked against")


@pytest.mark.parametrize("private", [True, False], ids=["private", "public"])
def test_held_split_gives_ray_datas_batches_bit_for_bit(local_ray, private: bool,  # noqa: ANN001
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-worker trial batches a split itself (HeldSplit); its batches must be those Ray
    Data's iter_torch_batches gives, in order, for every seed, batch size and block layout
    (uneven blocks, a batch larger than a block, a shuffle buffer spanning several): through
    Ray's private batcher, and through the public iterator a Ray not checked gets."""
    import pyarrow as pa
    import torch

    from raygenre.sweep.feed import SHUFFLE_BUFFER_ROWS, HeldSplit, torch_batches

    _ray_path(private, monkeypatch)

    rng = np.random.default_rng(0)
    tables = []
    for n in (5, 130, 1, 77, SHUFFLE_BUFFER_ROWS + 3, 12):
        x = rng.standard_normal((n, 6)).astype(np.float32)
        tables.append(pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 6),
                                "label": pa.array(rng.integers(0, 9, n), pa.int64()),
                                "track": pa.array(rng.integers(0, 40, n), pa.int32())}))
    ds = local_ray.data.from_arrow_refs([local_ray.put(t) for t in tables])
    held = HeldSplit(ds)
    assert len(held) == sum(t.num_rows for t in tables)
    assert (held._numbers is None) == private  # the path asked for is the one taken
    whole = torch.from_numpy(np.concatenate([t.column("x").combine_chunks().flatten().to_numpy()
                                             for t in tables]).reshape(-1, 6))
    orders = set()
    for batch_size in (1, 7, 32, 600):
        for seed in (None, 0, 101):
            ours = list(held.batches(batch_size, seed))
            rays = list(torch_batches(ds, batch_size, seed))
            assert len(ours) == len(rays), (batch_size, seed)
            for a, b in zip(ours, rays, strict=True):
                assert a["x"].dtype == b["x"].dtype and a["label"].dtype == b["label"].dtype
                assert torch.equal(a["x"], b["x"]) and torch.equal(a["label"], b["label"])
                assert torch.equal(a["track"], b["track"])  # val/track_acc's track numbers
                assert torch.equal(a["x"], whole[a["row"]])  # rows the loop can hold features by
                assert a["row"].dtype == torch.int64
            rows = torch.cat([b["row"] for b in ours])
            assert sorted(rows.tolist()) == list(range(len(held)))  # every row, once
            orders.add(tuple(torch.cat([b["label"] for b in ours]).tolist()))
    # The seeds do shuffle (a test of order would pass on two unshuffled streams otherwise).
    assert len(orders) >= 3  # unshuffled, seed 0, seed 101


@pytest.mark.parametrize("private", [True, False], ids=["private", "public"])
def test_dataset_of_tables_is_from_arrow_refs(local_ray, private: bool,  # noqa: ANN001
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The splits' datasets are built with block metadata computed in the driver; they must be
    what Ray's from_arrow_refs makes of the same blocks: rows, schema, block sizes (the public
    fallback is from_arrow_refs itself)."""
    import pyarrow as pa

    from raygenre.sweep.feed import dataset_of_tables

    _ray_path(private, monkeypatch)

    rng = np.random.default_rng(1)
    tables = [pa.table({"x": pa.FixedSizeListArray.from_arrays(
                  pa.array(rng.standard_normal(4 * n).astype(np.float32)), 4),
               "label": pa.array(rng.integers(0, 5, n), pa.int64())}) for n in (3, 40, 1)]
    ours = dataset_of_tables(iter(tables))
    rays = local_ray.data.from_arrow_refs([local_ray.put(t) for t in tables])
    assert ours.count() == rays.count() == 44
    assert ours.schema() == rays.schema()
    assert [len(t) for t in local_ray.get(ours.to_arrow_refs())] == [3, 40, 1]
    assert ours.take_all() == rays.take_all()
    assert ours.stats().count("FromArrow") == rays.stats().count("FromArrow")
    assert dataset_of_tables(iter([])) is None
