"""The test split's ledger: every read of a prepared set's test split, kept beside the set.

A held-out split estimates how a chosen model does on new data only while nothing was chosen by
looking at it; each read that informs a choice (which recipe, how many epochs) biases it, and
the bias grows with the reads (Dwork et al., "The reusable holdout", Science 2015). So the test
split is read in one place (`report.evaluate.predict`), which names its reader and appends a
line here, and every summary says how often its test split has been read.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

LEDGER_FILE = "test_reads.jsonl"


def ledger_path(prepared_path: str | os.PathLike) -> Path:
    return Path(prepared_path) / LEDGER_FILE


def record(prepared_path: str | os.PathLike, reader: str, checkpoint: str) -> int:
    """Append one read of this prepared set's test split; returns the reads so far."""
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "reader": reader,
             "checkpoint": checkpoint, "command": " ".join(sys.argv)}
    # One write of one line in append mode: concurrent readers' lines never interleave.
    with open(ledger_path(prepared_path), "a") as f:
        f.write(json.dumps(entry) + "\n")
    return len(reads(prepared_path))


def reads(prepared_path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every recorded read, oldest first ([] for a set never tested)."""
    path = ledger_path(prepared_path)
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError as e:
            raise ValueError(f"{path}:{n}: not a ledger line ({e}); the file is append-only "
                             f"JSON lines: mend or remove that line") from e
    return out


def describe(prepared_path: str | os.PathLike) -> str:
    """'this test split has been read K times (by N commands)', for every summary."""
    got = reads(prepared_path)
    commands = len({r.get("command") for r in got})
    times = "once" if len(got) == 1 else f"{len(got)} times"
    return (f"this test split has been read {times} (by {commands} command"
            f"{'s' if commands != 1 else ''}; ledger `{ledger_path(prepared_path)}`)")
