"""What a command reports in one line instead of a traceback: the errors (`error: ...`, exit
status 2) and an interrupted sweep (exit status 130, resumable).

One place for the types the command line catches (it no longer reaches into the data, report
and run-state modules for them); those modules raise them. `ConfigError` stays in
raygenre.config, where the config and grid checks raise it.
"""

from __future__ import annotations


class DataError(ValueError):
    """The data cannot be used; the message names the file or folder and what is wrong."""


class NoResults(RuntimeError):
    """Every trial failed before reporting a metric; cells.csv says why."""


class Interrupted(RuntimeError):
    """The sweep stopped before every trial finished; the run folder can be resumed."""
