"""Where runs and data live: a local folder, an NFS mount, or a bucket (`s3://`, `gs://`).

`Location` is one place in any of these, with the few file operations raygenre needs, done
through pyarrow's filesystems (the ones Ray Tune and Train use), so the sweep, the resume and
the results code is the same for a laptop folder and a bucket. On a multi-node cluster every
node must see the run folder: `check_shared` refuses a path on the head's own disk before any
trial starts.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from raygenre.config import ConfigError

# URI schemes pyarrow resolves to a filesystem (file:// is this machine's disk, by URI).
SCHEMES = {"s3": "Amazon S3 (or any S3 API)", "gs": "Google Cloud Storage",
           "gcs": "Google Cloud Storage", "hdfs": "HDFS", "abfs": "Azure",
           "abfss": "Azure", "file": "this machine's disk"}
# Mount types that other machines can share (/proc/mounts); EFS mounts as nfs4.
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph",
              "glusterfs", "fuse.glusterfs", "fuse.ceph", "fuse.sshfs", "fuse.s3fs",
              "fuse.gcsfuse", "fuse.juicefs", "fuse.mountpoint-s3", "9p", "virtiofs"}
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")


class StorageError(ConfigError):
    """A storage location that cannot be used, with why and what to pass instead."""


@dataclass(frozen=True)
class Location:
    """A folder or file: an absolute local path, or a `scheme://bucket/path` URI."""

    uri: str

    @classmethod
    def parse(cls, text: str | os.PathLike | Location, what: str = "--storage") -> Location:
        """Check and normalise what the user typed; the error names `what` and the value."""
        if isinstance(text, Location):
            return text
        raw = str(text).strip()
        if not raw:
            raise StorageError(f"{what}: empty; give a folder, an NFS path or a URI "
                               f"such as s3://bucket/raygenre")
        m = _URI.match(raw)
        if m is None:
            if "://" in raw or re.match(r"^[A-Za-z0-9+.-]{2,}:/", raw):
                raise StorageError(f"{what} {raw!r}: not a path and not a URI "
                                   f"(a URI is scheme://bucket/path, e.g. s3://bucket/runs)")
            return cls(str(Path(raw).expanduser().resolve()))
        scheme, rest = m.group(1).lower(), m.group(2)
        if scheme not in SCHEMES:
            raise StorageError(
                f"{what} {raw!r}: unsupported scheme {scheme!r}; use a local or NFS path or "
                f"one of {', '.join(s + '://' for s in SCHEMES)}")
        if "?" in rest or "#" in rest:
            raise StorageError(f"{what} {raw!r}: query parameters are not supported here; set "
                               f"the region or endpoint in the environment (AWS_DEFAULT_REGION, "
                               f"AWS_ENDPOINT_URL) instead")
        if scheme == "file":
            if not rest.startswith("/"):
                raise StorageError(f"{what} {raw!r}: a file URI needs an absolute path, "
                                   f"as file:///data/runs")
            return cls("file://" + str(Path(rest).resolve()))
        bucket = rest.split("/", 1)[0]
        if not bucket:
            raise StorageError(f"{what} {raw!r}: names no bucket ({scheme}://BUCKET/path)")
        return cls(f"{scheme}://{rest.rstrip('/')}")

    # --- what it is -----------------------------------------------------------------------
    @property
    def scheme(self) -> str | None:
        m = _URI.match(self.uri)
        return m.group(1) if m else None

    @property
    def local_path(self) -> Path | None:
        """The path on this machine's filesystem, if it is one (plain path or file://)."""
        if self.scheme is None:
            return Path(self.uri)
        if self.scheme == "file":
            return Path(self.uri[len("file://"):])
        return None

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        head = self.uri.rstrip("/").rsplit("/", 1)[0]
        return Location(head or "/")

    def __truediv__(self, part: str) -> Location:
        return Location(self.uri.rstrip("/") + "/" + part.strip("/"))

    def __str__(self) -> str:
        return self.uri

    # --- file operations (pyarrow filesystems) -------------------------------------------------
    @cached_property
    def _fs_path(self) -> tuple[Any, str]:
        import pyarrow.fs as pafs

        if self.scheme is None:
            return pafs.LocalFileSystem(), self.uri
        return pafs.FileSystem.from_uri(self.uri)

    def _info(self) -> Any:
        fs, path = self._fs_path
        return fs.get_file_info(path)

    def check_reachable(self, what: str = "--storage") -> None:
        """Fail now, with the option named, if this place cannot even be looked at (no
        credentials, no such bucket, no network)."""
        try:
            self._info()
        except OSError as e:
            raise StorageError(f"{what} {self}: cannot reach it ({type(e).__name__}: {e})") from e

    @property
    def bucket(self) -> str | None:
        """The bucket of a bucket URI (None for a path on this machine)."""
        if self.local_path is not None:
            return None
        return self.uri.split("://", 1)[1].split("/", 1)[0]

    def check_writable(self, what: str = "--storage") -> None:
        """For a bucket: fail now, naming `what` and the bucket, if an object cannot be
        written there and deleted again (a read-only key, a bucket policy), rather than when
        the first trial saves a checkpoint or Tune prunes one. A path on this machine is
        checked where its folder is made."""
        if self.bucket is None:
            return
        probe = self / f".raygenre-write-check-{uuid.uuid4().hex[:8]}"
        fs, path = probe._fs_path
        try:
            with fs.open_output_stream(path) as f:
                f.write(b"raygenre checks that it may write here; deleted at once\n")
            fs.delete_file(path)
        except OSError as e:
            raise StorageError(
                f"{what} {self}: cannot write to bucket {self.bucket!r} ({type(e).__name__}: "
                f"{e}). A sweep writes (and deletes) objects there: give these credentials "
                f"s3:PutObject and s3:DeleteObject on it, or pass another {what}") from e

    def exists(self) -> bool:
        import pyarrow.fs as pafs

        return self._info().type != pafs.FileType.NotFound

    def size(self) -> int | None:
        import pyarrow.fs as pafs

        info = self._info()
        return info.size if info.type == pafs.FileType.File else None

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def read_bytes(self) -> bytes:
        fs, path = self._fs_path
        try:
            with fs.open_input_stream(path) as f:
                return f.read()
        except OSError as e:  # a bucket's filesystem says "not found" as a plain OSError
            if isinstance(e, FileNotFoundError) or self.exists():
                raise
            raise FileNotFoundError(self.uri) from e

    def write_text(self, text: str) -> None:
        """Whole-file write; atomic (a reader sees the old or the new text, never half)."""
        local = self.local_path
        if local is not None:
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_text(text)
            tmp.replace(local)
            return
        fs, path = self._fs_path  # an object store PUT is atomic
        with fs.open_output_stream(path) as f:
            f.write(text.encode())

    def mkdir(self) -> None:
        fs, path = self._fs_path
        fs.create_dir(path, recursive=True)

    def rmtree(self) -> None:
        """Delete this folder and everything in it; a folder that is not there is no error,
        one that cannot be deleted is (naming it), never half-deleted in silence."""
        local = self.local_path
        try:
            if local is not None:
                shutil.rmtree(local)
                return
            fs, path = self._fs_path
            if self.exists():
                fs.delete_dir(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StorageError(f"cannot delete {self} ({type(e).__name__}: {e}); delete it by "
                               f"hand or use another folder") from e

    def listdir(self) -> list[str]:
        """Names directly inside this folder, sorted; [] if it does not exist."""
        import pyarrow.fs as pafs

        fs, path = self._fs_path
        try:
            infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(i.base_name for i in infos)

    def download(self, dest: Path) -> Path:
        """This folder's files under `dest` (created); a plain local folder is used where it
        is."""
        if self.scheme is None:
            return Path(self.uri)
        import pyarrow.fs as pafs

        fs, path = self._fs_path
        dest.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(path, str(dest), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())
        return dest

    def put_dir(self, src: Path, last: str | None = None) -> None:
        """Copy the files of the local folder `src` into this folder; `last` goes last (a
        reader that finds it knows the rest is complete)."""
        for f in sorted((f for f in src.iterdir() if f.is_file()), key=lambda f: f.name == last):
            (self / f.name).put_file(f)

    def put_file(self, src: Path) -> None:
        """Copy the local file `src` to this location."""
        fs, path = self._fs_path
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with open(src, "rb") as f, fs.open_output_stream(path) as g:
            shutil.copyfileobj(f, g, 1 << 20)


def check_places(storage: Location, cache: str | None) -> None:
    """Before Ray starts: --storage can be reached and, if a bucket, written to; so can a
    --cache bucket (prepared data is put there). Seconds, not a failed first trial."""
    storage.check_reachable()
    storage.check_writable("--storage")
    shared = Location.parse(cache, "--cache") if cache else None
    if shared is not None and shared.bucket is not None:
        shared.check_reachable("--cache")
        shared.check_writable("--cache")


def filesystem_type(path: Path) -> str:
    """The mount type holding `path` (from /proc/mounts; 'unknown' where there is none)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    path = path.resolve()
    best, kind = "", "unknown"
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = path == Path(point) or Path(point) in path.parents
        if inside and len(point) > len(best):
            best, kind = point, parts[2]
    return kind


def check_shared(loc: Location, node_ips: list[str], what: str = "--storage",
                 may_grow: bool = False) -> str:
    """Refuse a run folder that other machines of the cluster cannot see; say why it is fine.

    One machine (every node on one IP, as a laptop or a test cluster) shares its disk; on
    several, a plain path must be a network mount, else each node would write its checkpoints
    to its own disk and a resumed trial could not find them. `may_grow`: an autoscaler can add
    machines later (a `ray up` cluster that starts with its head alone), so one is not enough.
    """
    hosts = sorted(set(node_ips))
    if len(hosts) <= 1 and not may_grow:
        return "one machine"
    local = loc.local_path
    if local is None:
        return f"{loc.scheme}:// is reachable from every node"
    probe = local
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    kind = filesystem_type(probe)
    if kind in NETWORK_FS:
        return f"{probe} is a {kind} mount"
    machines = (f"has {len(hosts)} machines ({', '.join(hosts)})" if len(hosts) > 1 else
                "can grow (its autoscaler adds machines)")
    raise StorageError(
        f"{what} {loc}: on this head node's own disk ({kind}), but the cluster {machines}: "
        f"their trials could not write checkpoints there, nor find them on resume. Pass a "
        f"folder every node mounts (NFS, EFS) or a bucket: {what} s3://BUCKET/raygenre")


def mirror(src: Location, dest: Path) -> Path:
    """Copy the files under `src` (a bucket folder) to `dest`, skipping those already there
    with the same size and time: a re-run fetches only what changed. Times are kept, so the
    prepared-data cache (keyed by file sizes and times) matches on every machine."""
    import pyarrow.fs as pafs

    if src.scheme is None:
        return Path(src.uri)
    fs, root = src._fs_path
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    files = [i for i in infos if i.type == pafs.FileType.File]
    if not files:
        raise StorageError(f"--data {src}: no file there")
    for info in files:
        rel = info.path[len(root.rstrip("/")) + 1:]
        out = dest / rel
        mtime = info.mtime_ns or 0
        if out.exists() and out.stat().st_size == info.size and out.stat().st_mtime_ns == mtime:
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        with fs.open_input_stream(info.path) as f, open(tmp, "wb") as g:
            shutil.copyfileobj(f, g, 1 << 20)
        os.utime(tmp, ns=(mtime, mtime))
        tmp.replace(out)
    return dest


def local_mirror_dir(cache: Path, src: Location) -> Path:
    """Where a bucket folder is mirrored in the local cache: one folder per URI."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", src.uri)
    return cache / "mirror" / safe
