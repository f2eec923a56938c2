"""Checkpoint scratch folders: where each epoch's checkpoint is written before the runner copies
it into the run's storage, and the clean-up of those a killed writer left behind.

A trial killed while it holds one (kill -9, a lost node, the out-of-memory killer) leaves it
behind, ~650 MB at the study's resolution, and CI once filled its disk with them. The name carries
the writer's pid (and pid namespace: containers may share a temp dir, not their pids) so that the
next loop to start can tell an orphan from a live trial's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

SCRATCH_PREFIX = "raygenre-ckpt-"


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:  # no /proc (macOS): one namespace
        return "0"


def scratch_prefix(pid: int | None = None) -> str:
    """The name start of a process's checkpoint scratch folders: SCRATCH_PREFIX, then
    `<pid namespace>.<pid>-`."""
    return f"{SCRATCH_PREFIX}{_pid_namespace()}.{pid or os.getpid()}-"


def checkpoint_scratch() -> tempfile.TemporaryDirectory:
    """A temp folder for one checkpoint's files, named for this process."""
    return tempfile.TemporaryDirectory(prefix=scratch_prefix())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphaned_scratch(root: str | os.PathLike | None = None) -> list[Path]:
    """Remove the checkpoint scratch folders in `root` (the temp dir) whose writer has died:
    a trial's (each epoch's checkpoint) or a driver's (a checkpoint fetched for the test).

    A live process's folders stay, whoever it is, and so do those of another pid namespace
    (another container's), whose pids mean nothing here, and another user's; a reused pid
    keeps an orphan until that process ends too, which costs disk, never a live checkpoint.
    """
    removed, ours = [], _pid_namespace()
    for folder in sorted(Path(root or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*.*-*")):
        ns, _, pid = folder.name[len(SCRATCH_PREFIX):].split("-", 1)[0].partition(".")
        if ns != ours or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            if folder.stat().st_uid != os.getuid():  # another user's: not ours to remove
                continue
            shutil.rmtree(folder)
        except FileNotFoundError:  # another starting loop removed it first
            continue
        removed.append(folder)
    return removed
