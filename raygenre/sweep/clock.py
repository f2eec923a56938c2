"""A sweep's wall time across the commands that ran it: the first, and each `--resume`.

A resumed sweep's wall is not the wall of the command that finished it: a sweep of an hour
resumed after its results folder was lost finishes in a minute. Each command appends its own
span to a file in the run folder and extends it every `TICK_S` while it runs, so a command
killed without warning (a lost machine) still counts up to its last tick.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from types import TracebackType

from raygenre.storage import Location

# How much of a killed command's time may go uncounted; each tick is one small write to the run
# folder (a bucket PUT where the folder is one), so not every second.
TICK_S = 30.0
_FIX = "delete it to go on (the wall of the commands before is then not counted)"


@dataclass(frozen=True)
class SweepWall:
    """Seconds of every command that ran the sweep, and whether each of them was timed."""

    spans: tuple[float, ...]  # one per command, this one last
    untimed_runs: bool  # an earlier command ran before walls were kept: its time is missing

    @property
    def total_s(self) -> float:
        return sum(self.spans)

    def words(self) -> str:
        """'12.3 min', or with resumes '12.3 min over 2 commands (this one 0.1)'."""
        text = f"{self.total_s / 60:.1f} min"
        if len(self.spans) > 1 or self.untimed_runs:
            text += (f" over {len(self.spans)} command{'s' * (len(self.spans) > 1)} "
                     f"(this one {self.spans[-1] / 60:.1f})")
        if self.untimed_runs:
            text += "; the commands before them ran before walls were kept, not counted"
        return text


def read_spans(state: Location) -> list[list[float]]:
    """[start, last tick] of each command so far; [] if none was recorded. A file that is not
    a list of pairs is an error naming it, not a wall of zero."""
    if not state.exists():
        return []
    try:
        spans = json.loads(state.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{state}: not a sweep wall record ({e}); {_FIX}") from e
    if not (isinstance(spans, list) and all(
            isinstance(s, list) and len(s) == 2 and all(isinstance(x, int | float) for x in s)
            for s in spans)):
        raise ValueError(f"{state}: not a sweep wall record (a list of [start, end] seconds); "
                         f"{_FIX}")
    return spans


class WallClock:
    """Times the `with` block as one command of the sweep, next to the commands before it.

    `resumed`: this command continues a sweep (so an earlier command ran it); when the run
    folder holds no record of that command, it started before walls were kept and `wall()`
    says its time is missing.
    """

    def __init__(self, state: Location, resumed: bool) -> None:
        self.state, self.resumed = state, resumed
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def __enter__(self) -> WallClock:
        self._before = read_spans(self.state)
        self._start = time.time()
        self._end = self._start
        self._write()
        self._thread = threading.Thread(target=self._tick, name="raygenre-wall", daemon=True)
        self._thread.start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            self._write()

    def _write(self) -> None:
        with self._lock:
            self._end = time.time()
            self.state.write_text(json.dumps([*self._before, [self._start, self._end]]))

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._write()

    def wall(self) -> SweepWall:
        """The sweep's wall up to now, this command included."""
        with self._lock:
            now = self._end if self._stop.is_set() else time.time()
        spans = [e - s for s, e in self._before] + [now - self._start]
        return SweepWall(tuple(spans), untimed_runs=self.resumed and not self._before)
