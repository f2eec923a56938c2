"""A folder that appears whole or not at all: written under a temporary name, then renamed.

The generated sets (synth, music) and the prepared sets (sets) are folders that other runs
reuse on sight. So each is written in a sibling folder named `<name>.tmp<pid>`, closed with a
marker file written last (`DONE`, or the prepared set's `meta.json`), and renamed into place:
a run killed halfway leaves at most a `.tmp` folder, never a folder that looks finished.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class FolderNotCreated(OSError):
    """The temporary folder could not be made: its parent is not writable (or the disk is
    full). Raised before anything is written, so a caller can name the folder and the fix."""


@contextmanager
def atomic_folder(final: Path, marker: str = "DONE") -> Iterator[Path]:
    """Yield an empty temporary sibling of `final` to write into; on a clean exit, rename it
    to `final`. The body writes `marker` last: it is what readers check for.

    On an exception in the body the temporary folder is removed and the exception raised:
    nothing partial stays. When another process finished `final` first (the rename fails and
    `final` holds its marker), ours is removed and theirs kept: both were written from the same
    inputs, so they are identical. A temporary folder (or parent) that cannot be made raises
    FolderNotCreated.
    """
    tmp = final.with_name(f"{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run that had our pid
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise FolderNotCreated(e.errno, e.strerror, e.filename) from e
    try:
        yield tmp
        if not (tmp / marker).is_file():
            raise RuntimeError(f"{final}: written without its {marker} marker (a bug in the "
                               f"writer); the folder is not kept")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / marker).is_file():  # not a finished folder in the way: a real failure
            raise
