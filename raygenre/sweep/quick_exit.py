"""The command's exit without Python's teardown of torch's and Ray's ~3 000 modules, which took
~1 s after the last line (bench/overhead.py), and without skipping any exit hook.

`arm(code)` then `sys.exit(code)`: Python joins the threads still running and runs every
`atexit` hook (Ray's shutdown, logging's flush, temporary folders' clean-up, ...), newest first;
the last to run is `_leave`, registered here when `raygenre` is first imported, before any
library it imports registers its own, and it ends the process with `os._exit` before the
modules are torn down. Nothing is left to finalise by then. Unarmed (a notebook, a test, any
library use of raygenre) it does nothing.
"""

from __future__ import annotations

import atexit
import os
import sys

_code: int | None = None


def arm(code: int) -> None:
    """Make the coming interpreter exit leave with `code` once every exit hook has run."""
    global _code
    _code = code


def _leave() -> None:
    if _code is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_code)


atexit.register(_leave)
