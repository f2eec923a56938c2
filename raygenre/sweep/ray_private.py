"""Which Ray versions raygenre's fast paths through Ray's private modules were checked against.

Two places reach past Ray's public API, for speed alone:
- `sweep.feed`: a split's Ray Dataset built with its block metadata computed in the driver
  (`ray.data._internal`: Ray's own public constructor runs a task per block for it, ~0.5 s at a
  sweep's start), and a one-worker trial's batch order drawn by Ray Data's own batcher over
  row numbers (`blocks_to_batches`: no Ray Data iterator to start every epoch);
- `sweep.cluster`: a joined cluster's address resolved the way `ray.init` resolves it, and
  Ray's fixed default ports (`ray._private`).

Private modules change without notice. So each fast path runs only with a Ray whose release
series is listed here, the ones its code was read against and its tests passed on; with any
other Ray the public API does the same work (slower; what each fallback keeps is in its
docstring), so a Ray upgrade costs speed, never a broken sweep. Inside a listed series a
failing private import is an error, raised as such: it is not hidden behind the fallback.
"""

from __future__ import annotations

from functools import cache

# Ray release series (major, minor) the fast paths were checked against: their code read
# against that Ray's source, and tests/test_data.py and tests/test_ray_private.py passed on it
# (each comparing the fast path with the public one). Add a series only after they pass on it.
CHECKED_SERIES: tuple[tuple[int, int], ...] = ((2, 60),)


def series(version: str) -> tuple[int, int] | None:
    """(major, minor) of a Ray version string ("2.60.0", "2.61.0rc1", "3.0.0.dev0"), or None
    for one that does not start with two numbers."""
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


@cache
def checked() -> bool:
    """Whether the installed Ray is one the private fast paths were checked against (asked once
    a process: the installed Ray does not change under it)."""
    import ray

    return series(ray.__version__) in CHECKED_SERIES
