"""Storage locations: parsing what users type, the file operations through pyarrow (exercised
with file:// URIs, the same code path as a bucket), the multi-node refusal, shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raygenre import storage
from raygenre.config import Config
from raygenre.data.sets import prepare
from raygenre.storage import Location, StorageError, check_shared, mirror


@pytest.mark.parametrize("text, uri", [
    ("s3://bucket/runs/", "s3://bucket/runs"),
    ("S3://bucket/a//", "s3://bucket/a"),
    ("gs://my-bucket", "gs://my-bucket"),
    ("file:///tmp/x/../runs", "file:///tmp/runs"),
])
def test_uris_are_normalised(text: str, uri: str) -> None:
    assert Location.parse(text).uri == uri


def test_plain_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    loc = Location.parse("runs")
    assert loc.uri == str(tmp_path / "runs") and loc.local_path == tmp_path / "runs"
    assert loc.scheme is None
    assert Location.parse("~/x").uri == str(Path.home() / "x")
    assert Location.parse("s3://b/p").local_path is None


@pytest.mark.parametrize("text, why", [
    ("ftp://host/runs", "unsupported scheme 'ftp'"),
    ("s3://", "names no bucket"),
    ("s3:///runs", "names no bucket"),
    ("s3:/bucket/runs", "not a path and not a URI"),
    ("file://relative/runs", "needs an absolute path"),
    ("s3://bucket/runs?region=eu-west-1", "query parameters"),
    ("  ", "empty"),
])
def test_bad_locations_are_refused_naming_option_and_value(text: str, why: str) -> None:
    with pytest.raises(StorageError, match=why) as e:
        Location.parse(text, "--storage")
    assert "--storage" in str(e.value)


def test_join_parent_name() -> None:
    loc = Location.parse("s3://bucket/runs") / "batch_epoch" / "_train"
    assert loc.uri == "s3://bucket/runs/batch_epoch/_train"
    assert loc.name == "_train" and loc.parent.uri == "s3://bucket/runs/batch_epoch"


def test_file_operations_through_a_uri(tmp_path: Path) -> None:
    root = Location.parse(f"file://{tmp_path}/store")
    assert not root.exists() and root.listdir() == []
    (root / "a" / "x.json").write_text('{"k": 1}')
    assert (root / "a" / "x.json").read_text() == '{"k": 1}'
    assert (root / "a" / "x.json").size() == 8 and (root / "a").size() is None
    assert root.listdir() == ["a"]
    (root / "b").mkdir()
    assert root.listdir() == ["a", "b"]
    src = tmp_path / "local.bin"
    src.write_bytes(b"z" * 3000)
    (root / "b" / "c.bin").put_file(src)
    assert (tmp_path / "store" / "b" / "c.bin").read_bytes() == b"z" * 3000
    with pytest.raises(FileNotFoundError):
        (root / "missing.txt").read_text()
    root.rmtree()
    assert not root.exists()


def test_one_machine_shares_its_disk(tmp_path: Path) -> None:
    assert check_shared(Location.parse(tmp_path), ["10.0.0.1"]) == "one machine"
    # A test cluster: several nodes, one IP.
    assert check_shared(Location.parse(tmp_path), ["10.0.0.1"] * 3) == "one machine"


def test_head_local_path_refused_on_several_machines(tmp_path: Path) -> None:
    kind = storage.filesystem_type(tmp_path)
    if kind in storage.NETWORK_FS:
        pytest.skip(f"{tmp_path} is on a network mount ({kind}) here")
    with pytest.raises(StorageError) as e:
        check_shared(Location.parse(tmp_path / "runs"), ["10.0.0.1", "10.0.0.2"])
    msg = str(e.value)
    assert "--storage" in msg and str(tmp_path / "runs") in msg and "s3://" in msg
    assert "2 machines" in msg and kind in msg


def test_network_mounts_and_buckets_pass_on_several_machines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ips = ["10.0.0.1", "10.0.0.2"]
    assert "reachable from every node" in check_shared(Location.parse("s3://b/runs"), ips)
    monkeypatch.setattr(storage, "filesystem_type", lambda path: "nfs4")
    assert "nfs4 mount" in check_shared(Location.parse(tmp_path / "not" / "yet"), ips)


def test_filesystem_type_reads_the_mount_table() -> None:
    if not Path("/proc/mounts").exists():
        pytest.skip("no /proc/mounts")
    assert storage.filesystem_type(Path("/proc/self")) == "proc"


def test_mirror_copies_keeps_times_and_skips_what_is_there(gtzan_like: Path,
                                                           tmp_path: Path) -> None:
    dest = tmp_path / "mirror"
    got = mirror(Location.parse(f"file://{gtzan_like}"), dest)
    files = sorted(p.relative_to(gtzan_like) for p in gtzan_like.rglob("*") if p.is_file())
    assert sorted(p.relative_to(dest) for p in got.rglob("*") if p.is_file()) == files
    one = files[0]
    assert (dest / one).stat().st_mtime_ns == (gtzan_like / one).stat().st_mtime_ns
    # A second run copies nothing (a marker written into the copy survives), a changed file
    # is fetched again.
    os.utime(dest / files[1], ns=((gtzan_like / files[1]).stat().st_mtime_ns,) * 2)
    (dest / files[2]).write_bytes(b"stale")
    mirror(Location.parse(f"file://{gtzan_like}"), dest)
    assert (dest / files[2]).read_bytes() == (gtzan_like / files[2]).read_bytes()
    with pytest.raises(StorageError, match="no file there"):
        mirror(Location.parse(f"file://{tmp_path}/empty"), tmp_path / "m2")


def test_prepared_data_is_shared_through_a_bucket(gtzan_like: Path, tmp_path: Path) -> None:
    """Machine A prepares and shares; machine B (another local cache) fetches instead of
    preparing again; the same key and splits."""
    shared = Location.parse(f"file://{tmp_path}/bucket/cache")
    logs_a: list[str] = []
    a = prepare(gtzan_like, tmp_path / "cache_a", Config(), log=logs_a.append, shared=shared)
    assert any("shared at" in line for line in logs_a)
    assert (shared / "prepared" / a.path.name / "meta.json").exists()
    logs_b: list[str] = []
    b = prepare(gtzan_like, tmp_path / "cache_b", Config(), log=logs_b.append, shared=shared)
    assert any("fetched prepared data" in line for line in logs_b), logs_b
    assert b.path.name == a.path.name and b.counts == a.counts and b.reused
    for split in ("train", "val", "test"):
        assert b.split_path(split).read_bytes() == a.split_path(split).read_bytes()


def test_unreachable_storage_is_named() -> None:
    class Denied:  # what pyarrow's S3 filesystem raises without credentials
        def get_file_info(self, path: str) -> None:
            raise OSError("AWS Error ACCESS_DENIED during HeadObject operation")

    loc = Location.parse("s3://bucket/runs")
    loc.__dict__["_fs_path"] = (Denied(), "bucket/runs")  # no network in tests
    with pytest.raises(StorageError, match=r"--storage s3://bucket/runs: cannot reach it "
                                           r"\(OSError: AWS Error ACCESS_DENIED"):
        loc.check_reachable("--storage")


def test_a_cluster_that_can_grow_is_not_one_machine(tmp_path: Path) -> None:
    """`ray up` starts the head alone and adds GPU workers later: a head-local folder would
    look fine at the start and lose the workers' checkpoints."""
    if storage.filesystem_type(tmp_path) in storage.NETWORK_FS:
        pytest.skip("tmp is a network mount here")
    with pytest.raises(StorageError, match="can grow"):
        check_shared(Location.parse(tmp_path), ["10.0.0.1"], may_grow=True)
    assert "s3://" in check_shared(Location.parse("s3://b/r"), ["10.0.0.1"], may_grow=True)
