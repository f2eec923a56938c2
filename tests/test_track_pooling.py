"""bench/track_pooling.py: a run's checkpoints scored under three track poolings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from raygenre.config import PRESETS, Config
from raygenre.data import ledger
from raygenre.data.prepared import read_split, to_tensor
from raygenre.data.sets import prepare
from raygenre.training.builder import Runtime, build
from raygenre.training.checkpoints import save_checkpoint

REPO = Path(__file__).resolve().parent.parent


def _checkpoint(folder: Path, cfg: Config, runtime: Runtime, epoch: int, val_acc: float) -> None:
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
    runtime = Runtime(len(prepared.genres), prepared.segment_samples)
    run = tmp_path / "run"
    # The later checkpoint is not the best one: the report tests the best val/acc.
    _checkpoint(run / "t_a" / "checkpoint_000000", cfg, runtime, 1, 0.7)
    _checkpoint(run / "t_a" / "checkpoint_000001", cfg, runtime, 2, 0.4)
    mlp = cfg.replace(model="mlp", features="waveform", hidden=(8,))
    _checkpoint(run / "t_b" / "checkpoint_000000", mlp, runtime, 1, 0.9)

    def bench(*extra: str) -> dict[str, dict]:
        proc = subprocess.run(
            [sys.executable, str(REPO / "bench" / "track_pooling.py"), str(run),
             str(prepared.path), "--model", "small_cnn", *extra], capture_output=True,
            text=True, timeout=600,
            env={**os.environ, "RAYGENRE_BENCH_RESULTS": str(tmp_path / "bench")})
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1])
                for line in proc.stdout.splitlines() if line.startswith(("val {", "test {"))}

    # Without --show-test the test split is neither read nor printed.
    assert set(bench()) == {"val"}
    assert ledger.reads(prepared.path) == []
    rows = bench("--show-test")
    assert set(rows) == {"val", "test"}  # one small_cnn trial; the MLP's is left out
    assert [r["reader"] for r in ledger.reads(prepared.path)] == [
        f"bench/track_pooling.py --show-test ({run / 't_a' / 'checkpoint_000000'})"]
    for split, row in rows.items():
        assert (row["trial"], row["epoch"]) == ("t_a", 1)
        # Every pooling computed here another way, from the best checkpoint's weights (the
        # first checkpoint's: seed 1), not through the report's predict/scores.
        table = read_split(prepared, split)
        torch.manual_seed(1)
        feats, model = build(cfg, runtime)
        model.eval()
        with torch.no_grad():
            probs = model(feats(to_tensor(table.column("x")))).softmax(1)
        labels, tracks = table.column("label").to_pylist(), table.column("track").to_pylist()
        pred = probs.argmax(1).tolist()
        right = sum(p == y for p, y in zip(pred, labels, strict=True))
        assert abs(row["segment"] - right / len(pred)) < 1e-6  # the report's mean is float32
        votes, means = [], []
        for track in dict.fromkeys(tracks):
            idx = [i for i, t in enumerate(tracks) if t == track]
            counts = [sum(pred[i] == c for i in idx) for c in range(probs.shape[1])]
            top = [c for c in range(probs.shape[1]) if counts[c] == max(counts)]
            # A tied vote goes to the tied class with the most probability over the track.
            votes.append(max(top, key=lambda c: probs[idx, c].sum().item()) == labels[idx[0]])
            means.append(int(probs[idx].mean(0).argmax()) == labels[idx[0]])
        assert row["vote"] == sum(votes) / len(votes)
        assert row["mean_prob"] == sum(means) / len(means)
        assert row["tracks"] == len(means)
    assert (tmp_path / "bench" / "track_pooling.md").is_file()
