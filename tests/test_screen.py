"""raygenre.tools.screen (raygenre-screen): a grid's variants across seeds without Ray, tested
as the report does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _screen(grid: Path, data: Path, tmp: Path, out: str) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "raygenre.tools.screen", str(grid), "--data", str(data),
         "--seeds", "0,1", "--procs", "2", "--epochs", "2", "--cache", str(tmp / "cache"),
         "--out", str(tmp / out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "| variant | seeds | val/acc | val/track_acc |" in proc.stdout  # no test read
    rows = [json.loads(line) for line in (tmp / out / "screen.jsonl").read_text().splitlines()]
    return sorted(rows, key=lambda r: (r["variant"], r["seed"]))


def test_screen_runs_each_variant_and_seed_and_repeats_itself(gtzan_like: Path,
                                                              tmp_path: Path) -> None:
    grid = tmp_path / "g.yaml"
    grid.write_text("description: screen test\nbase: {model: small_cnn, features: logmel, "
                    "band_norm: true, cnn_channels: [4, 8], batch_size: 8}\n"
                    "variants:\n  - {name: a}\n  - {name: b, lr: 0.01}\n")
    first = _screen(grid, gtzan_like, tmp_path, "one")
    assert [(r["variant"], r["seed"]) for r in first] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    for r in first:
        assert len(r["val_history"]) == 2 and r["best_epoch"] in (1, 2)
        assert r["val/acc"] == max(r["val_history"])
        assert "test/acc" not in r and 0.0 <= r["val/track_acc"] <= 1.0
    # The seed reaches the cell: the same variant differs between seeds...
    a0, a1 = first[0], first[1]
    assert a0["last/train/loss"] != a1["last/train/loss"]
    # ...and the same seed gives the same numbers in another run, in other processes.
    again = _screen(grid, gtzan_like, tmp_path, "two")
    keys = ("val_history", "last/train/loss", "val/track_acc", "best_epoch")
    assert [[r[k] for k in keys] for r in again] == [[r[k] for k in keys] for r in first]
