"""Track accuracy under three ways of pooling a track's segments, on a finished run's checkpoints.

The report's `test/track_acc` is a majority vote of the segments' predictions. The other two
poolings tried here are the mean of the segments' class probabilities and the mean of their log
probabilities (a product of the segments' opinions). For each trial of a run folder whose model
is MODEL, the kept checkpoint with the best val/acc (the one the report tests) is scored all
three ways on the validation split, where a choice between them may be made; nothing is
trained. The test split is scored only with --show-test, and each such read is entered in the
prepared set's test ledger (raygenre.data.ledger).

    python bench/track_pooling.py RUN_FOLDER PREPARED_FOLDER [--model small_cnn] [--show-test]

RUN_FOLDER is a grid's folder under --storage (e.g. ~/raygenre_runs/best); PREPARED_FOLDER is the
prepared set the run used (its summary.md's `data:` line names it).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from _common import report

from raygenre.data.prepared import open_prepared
from raygenre.report.evaluate import predict, scores
from raygenre.training.checkpoints import read_meta
from raygenre.training.votes import track_groups

WAYS = ("segment", "vote", "mean_prob", "mean_log_prob")


def best_checkpoint(trial: Path) -> Path | None:
    """The kept checkpoint with the best val/acc (the one the report tests), or None."""
    kept = sorted(trial.glob("checkpoint_*"))
    return max(kept, key=lambda c: read_meta(c)["metrics"]["val/acc"]) if kept else None


def pooled(probs: torch.Tensor, labels: torch.Tensor, tracks: list[str], genres: list[str],
           split: str) -> dict[str, float]:
    """Segment accuracy and track accuracy under each pooling."""
    out = scores(probs, labels, tracks, genres, split)
    groups = list(track_groups(tracks).values())

    def acc(pool) -> float:  # noqa: ANN001
        return statistics.mean(int(pool(probs[idx]).argmax()) == int(labels[idx[0]])
                               for idx in groups)

    return {"segment": out[f"{split}/acc"], "vote": out[f"{split}/track_acc"],
            "mean_prob": acc(lambda p: p.mean(0)),
            "mean_log_prob": acc(lambda p: p.clamp_min(1e-9).log().mean(0)),
            "tracks": len(groups)}


def _table(split: str, rows: list[dict]) -> list[str]:
    means = {w: statistics.mean(r[w] for r in rows) for w in WAYS}
    return [f"**{split}** ({rows[0]['tracks']} tracks: one track is "
            f"{1 / rows[0]['tracks']:.3f} of a trial's track accuracy)", "",
            "| trial | seed | epoch | " + " | ".join(WAYS) + " |",
            "|---|---|---:|" + "---:|" * len(WAYS),
            *[f"| {r['trial']} | {r['seed']} | {r['epoch']} | "
              + " | ".join(f"{r[w]:.3f}" for w in WAYS) + " |" for r in rows],
            "| **mean** | | | " + " | ".join(f"{means[w]:.3f}" for w in WAYS) + " |", ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_folder", type=Path)
    ap.add_argument("prepared", type=Path)
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--show-test", action="store_true",
                    help="score the test split too (each read is entered in the set's test "
                         "ledger); the choice between poolings is made on validation")
    args = ap.parse_args()
    torch.set_num_threads(1)
    prepared = open_prepared(args.prepared)
    rows: dict[str, list[dict]] = {"val": [], **({"test": []} if args.show_test else {})}
    for trial in sorted(p for p in args.run_folder.iterdir() if p.is_dir()):
        ck = best_checkpoint(trial)
        if ck is None or read_meta(ck)["config"]["model"] != args.model:
            continue
        for split, split_rows in rows.items():
            probs, labels, tracks, meta = predict(
                ck, prepared, split, "cpu", reader=f"bench/track_pooling.py --show-test ({ck})")
            row = {"trial": trial.name, "seed": meta["config"]["seed"],
                   "epoch": meta["metrics"]["epoch"],
                   **pooled(probs, labels, tracks, list(prepared.genres), split)}
            print(split, json.dumps(row), flush=True)
            split_rows.append(row)
    if not rows["val"]:
        raise SystemExit(f"{args.run_folder}: no trial of model {args.model}")
    body = [*(line for split, split_rows in rows.items() for line in _table(split, split_rows)),
            f"{args.model} trials of `{args.run_folder}`, prepared set `{args.prepared}`."]
    figures = {f"{split}_{w}_mean": round(statistics.mean(r[w] for r in split_rows), 4)
               for split, split_rows in rows.items() for w in WAYS}
    report("track_pooling", "Pooling a track's segments: vote, mean probability, mean "
           "log-probability", body, figures)


if __name__ == "__main__":
    main()
