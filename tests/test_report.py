from __future__ import annotations

import json
from pathlib import Path

import pytest

from raygenre.report import best_checkpoint, checkpoints, latest_meta
from raygenre.storage import Location
from raygenre.train import META_FILE, STATE_FILE


def _ckpt(run: Path, epoch: int, acc: float, state: bytes, recorded: int | None = None) -> None:
    d = run / f"epoch_{epoch:04d}"
    d.mkdir(parents=True)
    (d / STATE_FILE).write_bytes(state)
    (d / META_FILE).write_text(json.dumps({
        "metrics": {"epoch": epoch, "val/acc": acc},
        "history": [{"epoch": e} for e in range(1, epoch + 1)],
        "state_bytes": len(state) if recorded is None else recorded}))


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_cut_short_and_unseen_checkpoints_are_not_results(tmp_path: Path, as_uri: bool) -> None:
    """ASHA stopped the trial after epoch 1 while epoch 2's upload was under way (seen in CI:
    a 20 MB piece of a 43 MB file), and a later epoch ran after Tune's last look. The same
    through a URI, as read from a bucket (pyarrow's filesystem, not os calls)."""
    _ckpt(tmp_path, 1, 0.3, b"x" * 100)
    _ckpt(tmp_path, 2, 0.9, b"x" * 40, recorded=100)  # cut short
    _ckpt(tmp_path, 3, 0.8, b"x" * 100)  # finished after Tune's last report (epoch 1)
    run = Location.parse(f"file://{tmp_path}" if as_uri else tmp_path)
    assert best_checkpoint(run).uri.startswith("file://" if as_uri else "/")
    tmp_path = run
    assert [d.name for d, _ in checkpoints(tmp_path)] == ["epoch_0001", "epoch_0003"]
    assert [d.name for d, _ in checkpoints(tmp_path, max_epoch=1)] == ["epoch_0001"]
    assert latest_meta(tmp_path, max_epoch=1)["metrics"]["epoch"] == 1
    assert best_checkpoint(tmp_path, max_epoch=2).name == "epoch_0001"
    assert best_checkpoint(tmp_path).name == "epoch_0003"
