"""results/<grid>/: trials and history tables, test evaluation of the best trial, summary, plots."""

from __future__ import annotations

import csv
import json
import math
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib
import pyarrow.parquet as pq

matplotlib.use("Agg")  # files only; no display on clusters or CI
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from raygenre.config import METRICS, Config, Grid, flat_trial_config  # noqa: E402
from raygenre.data import Prepared, to_tensor  # noqa: E402
from raygenre.paths import RunPaths  # noqa: E402
from raygenre.storage import Location  # noqa: E402
from raygenre.train import META_FILE, STATE_FILE, load_checkpoint  # noqa: E402

BEST = "best/val/acc"


def _fmt(v: Any, digits: int | None = 4) -> str:
    """Table text; digits=None keeps a float's full precision (CSV files, for comparisons)."""
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v) if digits is None else f"{v:.{digits}f}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(map(str, v)) + "]"
    return "" if v is None else str(v)


def _trial_id(result: Any) -> str:
    tid = (result.metrics or {}).get("trial_id")
    if tid:
        return str(tid)
    # A trial that failed before its first report has no metrics; its folder name holds the id:
    # <trainable>_<trial_id>_<index>_<params>...
    parts = Path(result.path).name.split("_")
    return "_".join(parts[1:3]) if len(parts) > 2 else Path(result.path).name


def checkpoints(train_run: Location | Path, max_epoch: int | None = None
                ) -> list[tuple[Location, dict]]:
    """(folder, meta) of each whole checkpoint of a Train run, oldest first.

    Skips a folder whose state file is not the size its meta recorded (an upload cut short when
    ASHA stopped the trial), and epochs after `max_epoch`, the last one Tune saw: a worker may
    finish an epoch after ASHA's stop, and that epoch is not part of the sweep.
    """
    out = []
    train_run = Location.parse(train_run, "train run")
    for d in (train_run / n for n in train_run.listdir() if n.startswith("epoch_")):
        try:
            meta = json.loads((d / META_FILE).read_text())
            whole = (d / STATE_FILE).size() == meta.get("state_bytes")
        except (OSError, ValueError):
            continue
        if whole and (max_epoch is None or meta["metrics"]["epoch"] <= max_epoch):
            out.append((d, meta))
    return out


def latest_meta(train_run: Location | Path, max_epoch: int | None = None) -> dict | None:
    """The newest whole checkpoint's meta: it holds the trial's history up to that epoch."""
    found = checkpoints(train_run, max_epoch)
    return found[-1][1] if found else None


def collect(results: Any, grid: Grid, paths: RunPaths) -> tuple[list[dict], list[dict]]:
    """(one row per trial, one row per trial and epoch) from a Tune ResultGrid.

    Per-epoch numbers come from each trial's latest checkpoint, not from Tune's logs: a driver
    killed between a checkpoint and Tune's next save would leave a gap in those.
    """
    trials, history = [], []
    for r in results:
        tid = _trial_id(r)
        config = flat_trial_config(r.config)
        swept = {k: config.get(k) for k in grid.swept}
        seen = (r.metrics or {}).get("epoch")  # the last epoch Tune saw (None if none)
        meta = latest_meta(paths.train_run(tid), seen)
        epochs = {int(m["epoch"]): m for m in (meta["history"] if meta else [])}
        for e in sorted(epochs):
            history.append({"trial_id": tid, **swept, "epoch": e,
                            **{m: epochs[e].get(m) for m in METRICS}})
        last = epochs[max(epochs)] if epochs else {}
        done = int(last.get("epoch", 0))
        if r.error is not None:
            status = "error"
        elif done >= int(config.get("epochs", 0)):
            status = "completed"
        else:
            status = "stopped_early"  # ASHA cut it at a rung
        trials.append({
            "trial_id": tid, "status": status, **swept, "epoch": done,
            **{m: last.get(m) for m in ("val/acc", "val/loss", "train/loss", "train/acc")},
            BEST: max((m["val/acc"] for m in epochs.values()), default=None),
            "wall_s": (r.metrics or {}).get("time_total_s"), "train_s": last.get("train_s"),
            "node": last.get("node", ""),
            "error": (str(r.error).strip().splitlines() or [""])[-1][:300] if r.error else "",
            "_config": {k: v for k, v in config.items() if k != "variant"},
            "_seen": seen,
        })
    return trials, history


def _write_csv(path: Path, rows: list[dict]) -> None:
    cols = [c for c in (rows[0] if rows else {}) if not c.startswith("_")]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({c: _fmt(row.get(c), digits=None) for c in cols})


def best_checkpoint(train_run: Location | Path, max_epoch: int | None = None) -> Location:
    """The kept whole checkpoint with the highest val/acc (earliest epoch on a tie)."""
    found = [(-m["metrics"]["val/acc"], m["metrics"]["epoch"], d)
             for d, m in checkpoints(train_run, max_epoch)]
    if not found:
        raise FileNotFoundError(f"no whole checkpoint under {train_run}")
    return min(found)[2]


@torch.no_grad()
def evaluate(checkpoint: Location | Path, prepared: Prepared,
             split: str = "test") -> dict[str, Any]:
    """Segment accuracy, track accuracy (majority vote), per-genre accuracy, confusion matrix."""
    with tempfile.TemporaryDirectory(prefix="raygenre_ckpt_") as d:
        checkpoint = Location.parse(checkpoint, "checkpoint")
        feats, model, meta = load_checkpoint(checkpoint.download(Path(d)))
    # Streamed in batches: the driver's memory does not grow with the test split.
    probs_parts, labels, tracks = [], [], []
    for batch in pq.ParquetFile(prepared.split_path(split)).iter_batches(
            128, columns=["x", "label", "track"]):
        probs_parts.append(model(feats(to_tensor(batch.column("x")))).softmax(1))
        labels += batch.column("label").to_pylist()
        tracks += batch.column("track").to_pylist()
    probs, y = torch.cat(probs_parts), torch.tensor(labels)
    pred = probs.argmax(1)
    n = len(prepared.genres)
    confusion = torch.zeros(n, n, dtype=torch.long)
    for t, p in zip(y.tolist(), pred.tolist(), strict=True):
        confusion[t, p] += 1
    by_track: dict[str, list[int]] = {}
    for i, t in enumerate(tracks):
        by_track.setdefault(t, []).append(i)
    track_hits = 0
    for idx in by_track.values():
        votes = Counter(pred[idx].tolist())
        top = max(votes.values())
        tied = [c for c, v in votes.items() if v == top]
        # A tie goes to the class with the most total probability over the track's segments.
        winner = max(tied, key=lambda c: probs[idx, c].sum().item())
        track_hits += int(winner == int(y[idx[0]]))
    per_genre = {g: (confusion[i, i].item() / max(1, confusion[i].sum().item()))
                 for i, g in enumerate(prepared.genres)}
    return {f"{split}/acc": (pred == y).float().mean().item(),
            f"{split}/track_acc": track_hits / len(by_track), "n_segments": len(y),
            "n_tracks": len(by_track), "per_genre": per_genre, "confusion": confusion.tolist(),
            "epoch": meta["metrics"]["epoch"], "checkpoint": str(checkpoint)}


def write_results(grid: Grid, base: Config, results: Any, paths: RunPaths, prepared: Prepared,
                  wall_s: float, preset: str, carried: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Every file of results/<grid>/; returns best.json's content."""
    out = paths.results
    out.mkdir(parents=True, exist_ok=True)
    trials, history = collect(results, grid, paths)
    # Tables first: whatever fails later, the sweep's numbers are on disk.
    _write_csv(out / "trials.csv", sorted(trials, key=lambda t: t["trial_id"]))
    _write_csv(out / "history.csv", history)
    shutil.copy(prepared.report_path, out / "data_report.csv")
    ok = [t for t in trials if t[BEST] is not None]
    if not ok:
        (out / "summary.md").write_text(f"# {paths.name}\n\nNo trial reported a metric; "
                                        f"see errors in trials.csv.\n")
        raise RuntimeError(f"every trial failed; errors in {out / 'trials.csv'}")
    sign = 1 if grid.mode == "max" else -1
    metric_key = BEST if grid.metric == "val/acc" else grid.metric
    best = max(ok, key=lambda t: (sign * t[metric_key], -t["epoch"]))
    test = evaluate(best_checkpoint(paths.train_run(best["trial_id"]), best["_seen"]), prepared)
    seeds = seed_table(grid, ok, paths, prepared) if "seed" in grid.swept else None
    best_json = {"grid": grid.name, "trial_id": best["trial_id"], "config": best["_config"],
                 "val/acc": best[BEST], "test/acc": test["test/acc"],
                 "test/track_acc": test["test/track_acc"], "epoch": test["epoch"],
                 "checkpoint": test["checkpoint"],
                 "swept": {k: best[k] for k in grid.labels},
                 "base": base.to_dict(), "carried": carried or {}, "n_trials": len(trials),
                 "wall_s": wall_s}
    (out / "best.json").write_text(json.dumps(best_json, indent=1) + "\n")
    plots = plot_all(grid, trials, history, best, test, prepared, out)
    (out / "summary.md").write_text(
        summary_md(grid, base, trials, best, test, prepared, paths, wall_s, preset, plots, seeds))
    print(f"[results] best trial {best['trial_id']}: val/acc {best[BEST]:.3f}, "
          f"test/acc {test['test/acc']:.3f}, test/track_acc {test['test/track_acc']:.3f}")
    return best_json


def _mean_std(values: list[float]) -> str:
    t = torch.tensor(values, dtype=torch.float64)
    std = t.std().item() if len(values) > 1 else 0.0
    return f"{t.mean().item():.3f} ± {std:.3f}"


def seed_table(grid: Grid, trials: list[dict], paths: RunPaths, prepared: Prepared) -> str:
    """Configs that differ only in seed, grouped: mean ± std of val and test accuracy, each
    seed's best checkpoint evaluated once on the test split."""
    keys = [k for k in grid.labels if k != "seed"]
    groups: dict[tuple, list[dict]] = {}
    for t in trials:
        groups.setdefault(tuple(_fmt(t[k]) for k in keys), []).append(t)
    lines = ["| " + " | ".join(keys or ["config"]) + " | seeds | best val/acc | test/acc | "
             "test/track_acc |", "|" + "---|" * (len(keys or [1]) + 4)]
    rows = []
    for key, members in groups.items():
        tests = [evaluate(best_checkpoint(paths.train_run(t["trial_id"]), t["_seen"]), prepared)
                 for t in members]
        vals = [t[BEST] for t in members]
        rows.append((sum(vals) / len(vals), "| " + " | ".join(key or ("all",)) + f" | "
                     f"{len(members)} | {_mean_std(vals)} | "
                     f"{_mean_std([x['test/acc'] for x in tests])} | "
                     f"{_mean_std([x['test/track_acc'] for x in tests])} |"))
    lines += [r for _, r in sorted(rows, reverse=True)]
    return "\n".join(lines) + "\n"


def summary_md(grid: Grid, base: Config, trials: list[dict], best: dict, test: dict,
               prepared: Prepared, paths: RunPaths, wall_s: float, preset: str,
               plots: list[str], seeds: str | None = None) -> str:
    axes = grid.labels
    counts = Counter(t["status"] for t in trials)
    split_counts = ", ".join(f"{k} {v}" for k, v in prepared.counts.items())
    status_counts = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    lines = [f"# {paths.name}", "", grid.description, "",
             f"- data: `{prepared.path}` ({split_counts} segments, {len(prepared.genres)} genres)",
             f"- preset: `{preset}`; seed {base.seed}; objective `{grid.metric}` ({grid.mode}), "
             f"ASHA on `epoch` (grace {grid.grace_period}, reduction {grid.reduction_factor})",
             f"- trials: {len(trials)} ({status_counts}); wall {wall_s / 60:.1f} min",
             f"- run folder: `{paths.experiment}`", "",
             "## Trials (sorted by final val/acc; ★ = best, by best val/acc over its epochs)", "",
             "| | trial | status | " + " | ".join(axes) + " | epochs run | val/acc | best val/acc |"
             " val/loss | train/loss | train/acc | wall s |",
             "|---|---|---|" + "---|" * len(axes) + "---:|---:|---:|---:|---:|---:|---:|"]
    for t in sorted(trials, key=lambda t: -(t["val/acc"] if t["val/acc"] is not None else -1)):
        mark = "★" if t is best else ""
        lines.append(f"| {mark} | {t['trial_id']} | {t['status']} | "
                     + " | ".join(_fmt(t[a]) for a in axes) + " | "
                     + " | ".join(_fmt(t[k]) for k in ("epoch", "val/acc", BEST, "val/loss",
                                                        "train/loss", "train/acc"))
                     + f" | {t['wall_s'] or 0:.0f} |")
    if seeds:
        lines += ["", "## Over seeds (mean ± std; each seed's best checkpoint on the test split)",
                  "", seeds]
    errors = [t for t in trials if t["status"] == "error"]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {t['trial_id']}: {t['error']}" for t in errors]
    cfg = best["_config"]
    lines += ["", "## Best trial", "",
              f"Trial `{best['trial_id']}` ({', '.join(f'{a}={_fmt(cfg.get(a))}' for a in axes)}),"
              f" best epoch {test['epoch']}: val/acc {best[BEST]:.4f}.", "",
              f"**Test** ({test['n_segments']} segments, {test['n_tracks']} tracks, evaluated once"
              f" on the best checkpoint): `test/acc` = {test['test/acc']:.4f}, `test/track_acc` "
              f"(majority vote per track) = {test['test/track_acc']:.4f}. "
              f"Chance is {1 / len(prepared.genres):.2f}.", "",
              "| genre | test acc |", "|---|---:|"]
    lines += [f"| {g} | {a:.3f} |" for g, a in test["per_genre"].items()]
    lines += ["", "Config of the best trial:", "", "```yaml"]
    lines += [f"{k}: {_fmt(v)}" for k, v in cfg.items()]
    lines += ["```", "", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += ["", "## Data split (by track)", "", prepared.table_path.read_text()]
    return "\n".join(lines) + "\n"


def _label(t: dict, axes: list[str]) -> str:
    return ", ".join(f"{a}={_fmt(t[a])}" for a in axes) or t["trial_id"]


def plot_all(grid: Grid, trials: list[dict], history: list[dict], best: dict, test: dict,
             prepared: Prepared, out: Path) -> list[str]:
    axes = grid.labels
    made = []
    ok = [t for t in trials if t["val/acc"] is not None]
    # val/acc of every trial
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(ok) + 2), 4))
    ok_sorted = sorted(ok, key=lambda t: t["val/acc"], reverse=True)
    ax.bar(range(len(ok_sorted)), [t["val/acc"] for t in ok_sorted],
           color=["tab:orange" if t is best else "tab:blue" for t in ok_sorted])
    ax.set_xticks(range(len(ok_sorted)), [_label(t, axes) for t in ok_sorted], rotation=70,
                  ha="right", fontsize=7)
    ax.set_ylabel("final val/acc")
    ax.set_title(f"{grid.name}: final validation accuracy per trial (orange: best)")
    fig.tight_layout()
    fig.savefig(out / "val_acc_by_trial.png", dpi=110)
    plt.close(fig)
    made.append("val_acc_by_trial.png")
    # heatmap for two-axis grids
    if len(axes) == 2:
        a, b = axes
        xs = sorted({t[b] for t in trials}, key=str if not _numeric(trials, b) else None)
        ys = sorted({t[a] for t in trials}, key=str if not _numeric(trials, a) else None)
        grid_vals = [[math.nan] * len(xs) for _ in ys]
        notes = [[""] * len(xs) for _ in ys]
        for t in ok:
            i, j = ys.index(t[a]), xs.index(t[b])
            grid_vals[i][j] = t["val/acc"]
            notes[i][j] = f"{t['val/acc']:.2f}" + (f"\nstop e{t['epoch']}"
                                                   if t["status"] == "stopped_early" else "")
        fig, ax = plt.subplots(figsize=(1.3 * len(xs) + 2.5, 0.7 * len(ys) + 2))
        im = ax.imshow(grid_vals, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(xs)), [_fmt(x) for x in xs])
        ax.set_yticks(range(len(ys)), [_fmt(y) for y in ys])
        ax.set_xlabel(b)
        ax.set_ylabel(a)
        finite = [v for row in grid_vals for v in row if not math.isnan(v)]
        mid = (min(finite) + max(finite)) / 2
        for i in range(len(ys)):
            for j in range(len(xs)):
                dark = math.isnan(grid_vals[i][j]) or grid_vals[i][j] < mid  # viridis is dark low
                ax.text(j, i, notes[i][j], ha="center", va="center", fontsize=7,
                        color="w" if dark else "k")
        fig.colorbar(im, label="final val/acc")
        ax.set_title(f"{grid.name}: val/acc by {a} x {b} (stop eN: ASHA stopped at epoch N)")
        fig.tight_layout()
        fig.savefig(out / "heatmap_val_acc.png", dpi=110)
        plt.close(fig)
        made.append("heatmap_val_acc.png")
    # curves of the best and the worst trial
    worst = min(ok, key=lambda t: t[BEST])
    fig, (l_ax, a_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for t, color in ((best, "tab:green"), (worst, "tab:red")):
        rows = [h for h in history if h["trial_id"] == t["trial_id"]]
        ep = [h["epoch"] for h in rows]
        tag = f"{'best' if t is best else 'worst'} ({_label(t, axes)})"
        for split, style in (("train", "-"), ("val", "--")):
            l_ax.plot(ep, [h[f"{split}/loss"] for h in rows], style, color=color, marker="o",
                      label=f"{tag} {split}")
            a_ax.plot(ep, [h[f"{split}/acc"] for h in rows], style, color=color, marker="o",
                      label=f"{tag} {split}")
    for ax, what in ((l_ax, "loss"), (a_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.set_title(f"train (solid) vs val (dashed) {what}")
        ax.grid(alpha=0.3)
    a_ax.legend(fontsize=7)
    fig.suptitle(f"{grid.name}: best and worst trial")
    fig.tight_layout()
    fig.savefig(out / "curves_best_worst.png", dpi=110)
    plt.close(fig)
    made.append("curves_best_worst.png")
    # confusion matrix of the best trial on the test split
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(test["confusion"], cmap="Blues")
    g = prepared.genres
    ax.set_xticks(range(len(g)), g, rotation=45, ha="right")
    ax.set_yticks(range(len(g)), g)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i, row in enumerate(test["confusion"]):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
    fig.colorbar(im)
    ax.set_title(f"{grid.name}: test confusion (segments), acc {test['test/acc']:.2f}")
    fig.tight_layout()
    fig.savefig(out / "confusion_test.png", dpi=110)
    plt.close(fig)
    made.append("confusion_test.png")
    return made


def _numeric(trials: list[dict], key: str) -> bool:
    return all(isinstance(t[key], (int, float)) for t in trials)


def write_pipeline(stages: list[dict[str, Any]], results_root: Path, top: str) -> Path:
    """pipeline.md (one row per stage) and a plot of the best accuracy per stage."""
    suffix = top[len("all"):]  # "" or "-smoke"
    md, png = results_root / f"pipeline{suffix}.md", results_root / f"pipeline{suffix}.png"
    lines = [f"# The study's pipeline ({top})", "",
             "Each stage starts from the winners of the stages before it (keys listed under "
             "`carry:` in its grid file).", "",
             "| stage | best config delta | val/acc | test/acc | test/track_acc | trials | "
             "wall min |", "|---|---|---:|---:|---:|---:|---:|"]
    for b in stages:
        delta = ", ".join(f"{k}={_fmt(v)}" for k, v in b.get("swept", {}).items()) or "(fixed)"
        lines.append(f"| [{b['grid']}]({top}/{b['grid']}/summary.md) | {delta} | "
                     f"{b['val/acc']:.4f} | {b['test/acc']:.4f} | {b['test/track_acc']:.4f} | "
                     f"{b.get('n_trials', '')} | {b.get('wall_s', 0) / 60:.1f} |")
    lines += ["", f"![best accuracy per stage]({png.name})", ""]
    md.write_text("\n".join(lines))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(stages) + 2), 4))
    xs = range(len(stages))
    for off, key, color in ((-0.2, "val/acc", "tab:blue"), (0.2, "test/acc", "tab:orange")):
        ax.bar([x + off for x in xs], [b[key] for b in stages], width=0.4, label=key,
               color=color)
    ax.set_xticks(list(xs), [b["grid"] for b in stages], rotation=20)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("best trial per stage: validation and test accuracy")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return md
