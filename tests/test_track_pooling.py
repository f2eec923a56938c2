"""bench/track_pooling.py: a run's checkpoints scored under three track poolings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from raygenre.config import PRESETS, Config
from raygenre.data import prepare, read_split, to_tensor
from raygenre.report.evaluate import evaluate
from raygenre.train import build, save_checkpoint

REPO = Path(__file__).resolve().parent.parent


def _checkpoint(folder: Path, cfg: Config, runtime: dict, epoch: int, val_acc: float) -> None:
    torch.manual_seed(epoch)
    _, model = build(cfg, runtime)
    folder.mkdir(parents=True)
    save_checkpoint(folder, cfg, runtime, {"epoch": epoch, "val/acc": val_acc}, [],
                    {"model": model.state_dict()})


def test_each_trials_best_val_checkpoint_is_scored_as_the_report_scores_it(
        builtin_small: Path, tmp_path: Path) -> None:
    cfg = Config().replace(**PRESETS["cpu"], model="small_cnn", features="logmel",
                           cnn_channels=(4, 8))
    prepared = prepare(builtin_small, tmp_path / "cache", cfg, log=lambda _: None)
    runtime = {"num_classes": len(prepared.genres), "segment_samples": prepared.segment_samples}
    run = tmp_path / "run"
    # The later checkpoint is not the best one: the report tests the best val/acc.
    _checkpoint(run / "t_a" / "checkpoint_000000", cfg, runtime, 1, 0.7)
    _checkpoint(run / "t_a" / "checkpoint_000001", cfg, runtime, 2, 0.4)
    mlp = cfg.replace(model="mlp", features="waveform", hidden=(8,))
    _checkpoint(run / "t_b" / "checkpoint_000000", mlp, runtime, 1, 0.9)

    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "track_pooling.py"), str(run), str(prepared.path),
         "--model", "small_cnn"], capture_output=True, text=True, timeout=600,
        env={**os.environ, "RAYGENRE_BENCH_RESULTS": str(tmp_path / "bench")})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1])
            for line in proc.stdout.splitlines() if line.startswith(("val {", "test {"))}
    assert set(rows) == {"val", "test"}  # one small_cnn trial; the MLP's is left out
    best = run / "t_a" / "checkpoint_000000"
    for split, row in rows.items():
        assert (row["trial"], row["epoch"]) == ("t_a", 1)
        ref = evaluate(best, prepared, split, "cpu")
        assert row["segment"] == ref[f"{split}/acc"]
        assert row["vote"] == ref[f"{split}/track_acc"]
        # Mean probability per track, computed here another way.
        table = read_split(prepared, split)
        torch.manual_seed(1)
        feats, model = build(cfg, runtime)
        model.eval()
        with torch.no_grad():
            probs = model(feats(to_tensor(table.column("x")))).softmax(1)
        labels, tracks = table.column("label").to_pylist(), table.column("track").to_pylist()
        right = [int(probs[[i for i, t in enumerate(tracks) if t == track]].mean(0).argmax())
                 == labels[tracks.index(track)] for track in dict.fromkeys(tracks)]
        assert row["mean_prob"] == sum(right) / len(right)
        assert row["tracks"] == len(right)
    assert (tmp_path / "bench" / "track_pooling.md").is_file()
