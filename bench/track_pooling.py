"""Track accuracy under three ways of pooling a track's segments, on a finished run's checkpoints.

The report's `test/track_acc` is a majority vote of the segments' predictions. The other two
poolings tried here are the mean of the segments' class probabilities and the mean of their log
probabilities (a product of the segments' opinions). For each trial of a run folder whose model
is MODEL, the kept checkpoint with the best val/acc (the one the report tests) is scored all
three ways on the validation split, where a choice between them may be made, and on the test
split, which only reports; nothing is trained.

    python bench/track_pooling.py RUN_FOLDER PREPARED_FOLDER [--model small_cnn]

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

from raygenre.data import _load_meta, split_batches, to_tensor
from raygenre.report.evaluate import scores
from raygenre.train import META_FILE, load_checkpoint


def best_checkpoint(trial: Path) -> Path:
    kept = sorted(trial.glob("checkpoint_*"))
    if not kept:
        raise SystemExit(f"{trial}: no checkpoint kept")
    return max(kept, key=lambda c: json.loads((c / META_FILE).read_text())["metrics"]["val/acc"])


@torch.no_grad()
def pooled(checkpoint: Path, prepared, split: str) -> dict[str, float]:  # noqa: ANN001
    feats, model, meta = load_checkpoint(checkpoint)
    probs, labels, tracks = [], [], []
    for b in split_batches(prepared, split, 128, ["x", "label", "track"]):
        probs.append(model(feats(to_tensor(b.column("x")))).float().softmax(1))
        labels += b.column("label").to_pylist()
        tracks += b.column("track").to_pylist()
    probs, labels = torch.cat(probs), torch.tensor(labels)
    out = scores(probs, labels, tracks, list(prepared.genres), split)
    by_track: dict[str, list[int]] = {}
    for i, t in enumerate(tracks):
        by_track.setdefault(t, []).append(i)

    def acc(pool) -> float:  # noqa: ANN001
        return statistics.mean(int(pool(probs[idx]).argmax()) == int(labels[idx[0]])
                               for idx in by_track.values())

    return {"epoch": meta["metrics"]["epoch"], "segment": out[f"{split}/acc"],
            "vote": out[f"{split}/track_acc"], "mean_prob": acc(lambda p: p.mean(0)),
            "mean_log_prob": acc(lambda p: p.clamp_min(1e-9).log().mean(0)),
            "tracks": len(by_track)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_folder", type=Path)
    ap.add_argument("prepared", type=Path)
    ap.add_argument("--model", default="small_cnn")
    args = ap.parse_args()
    torch.set_num_threads(1)
    prepared = _load_meta(args.prepared, reused=True)
    ways = ("segment", "vote", "mean_prob", "mean_log_prob")
    body, figures = [], {}
    for split in ("val", "test"):
        rows = []
        for trial in sorted(p for p in args.run_folder.iterdir() if p.is_dir()):
            if not list(trial.glob("checkpoint_*")):
                continue
            ck = best_checkpoint(trial)
            config = json.loads((ck / META_FILE).read_text())["config"]
            if config["model"] != args.model:
                continue
            row = {"trial": trial.name, "seed": config["seed"], **pooled(ck, prepared, split)}
            print(split, json.dumps(row), flush=True)
            rows.append(row)
        if not rows:
            raise SystemExit(f"{args.run_folder}: no trial of model {args.model}")
        means = {w: statistics.mean(r[w] for r in rows) for w in ways}
        body += [f"**{split}** ({rows[0]['tracks']} tracks: one track is "
                 f"{1 / rows[0]['tracks']:.3f} of a trial's track accuracy)", "",
                 "| trial | seed | epoch | " + " | ".join(ways) + " |",
                 "|---|---|---:|" + "---:|" * len(ways)]
        body += [f"| {r['trial']} | {r['seed']} | {r['epoch']} | "
                 + " | ".join(f"{r[w]:.3f}" for w in ways) + " |" for r in rows]
        body += ["| **mean** | | | " + " | ".join(f"{means[w]:.3f}" for w in ways) + " |", ""]
        figures.update({f"{split}_{w}_mean": round(means[w], 4) for w in ways})
    body += [f"{args.model} trials of `{args.run_folder}`, prepared set `{args.prepared}`."]
    report("track_pooling", "Pooling a track's segments: vote, mean probability, mean "
           "log-probability", body, figures)


if __name__ == "__main__":
    main()
