"""What a command reports in one line instead of a traceback: the errors (`error: ...`, exit
status 2) and an interrupted sweep (exit status 130, resumable).

They live apart from the code that raises them so that the command line can catch them
without importing torch (raygenre.sweep.cli starts those imports in the background).
`ConfigError` stays in raygenre.config, which imports nothing heavy either.
"""

from __future__ import annotations


class DataError(ValueError):
    """The data cannot be used; the message names the file or folder and what is wrong."""


class NoResults(RuntimeError):
    """Every trial failed before reporting a metric; trials.csv says why."""


class Interrupted(RuntimeError):
    """The sweep stopped before every run finished; the run folder can be resumed."""
