"""cells.csv, history.csv and summary.md of one sweep."""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from raygenre.config import Config
from raygenre.data.prepared import Prepared
from raygenre.grid.file import Grid
from raygenre.report.uncertainty import METHOD, describe


@dataclass(frozen=True)
class SweepFacts:
    """What the sweep did, for the summary: said as it was, not as the defaults would have it."""

    name: str
    preset: str
    preset_why: str
    data: str  # where the data came from, in words
    run_folder: str
    plan: str  # the printed plan
    trials: str  # how many Tune trials stood for how many cells
    concurrency: int
    wall_s: float  # every command that ran the sweep (its first and each --resume)
    command: str
    data_source: str = ""  # the data set in one spelling (run_state.data_source)
    wall_words: str = ""  # the wall in words: over how many commands (sweep.clock)
    wall_known: bool = True  # False: a command before walls were kept is not in wall_s


def fmt(v: Any, digits: int | None = 4) -> str:
    """Table text; digits=None keeps a float's full precision (CSV files, for comparisons)."""
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v) if digits is None else f"{v:.{digits}f}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(map(str, v)) + "]"
    return "" if v is None else str(v)


def write_csv(path: Path, rows: list[dict]) -> None:
    cols = [c for c in (rows[0] if rows else {}) if not c.startswith("_")]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({c: fmt(row.get(c), digits=None) for c in cols})


def mean_std(values: list[float]) -> str:
    t = torch.tensor(values, dtype=torch.float64)
    std = t.std().item() if len(values) > 1 else 0.0
    return f"{t.mean().item():.3f} ± {std:.3f}"


def training_share(cells: list[dict[str, Any]], facts: SweepFacts) -> float | None:
    """Summed epoch compute of every trial over the sweep's wall times its concurrent slots: how
    much of what the sweep held went to training (the rest: starting and stopping trials,
    waiting, Ray's own work). None when part of the wall was not timed: a share over it would
    be a number, and wrong."""
    if not facts.wall_known:
        return None
    per_trial: dict[str, float] = {}
    for c in cells:
        if c["train_s"] is not None:
            per_trial[c["trial_id"]] = max(per_trial.get(c["trial_id"], 0.0), c["train_s"])
    held = facts.wall_s * facts.concurrency
    return sum(per_trial.values()) / held if held else 0.0


def share_words(share: float | None, concurrency: int) -> str:
    if share is None:
        return "training share not known (part of the wall was not timed)"
    return (f"training share {share:.2f} (summed epoch compute / (wall x {concurrency} "
            f"slots))")


def asha_line(grid: Grid) -> str:
    if not grid.asha:
        return "every trial in full (no ASHA)"
    return (f"ASHA on `epoch` (grace {grid.grace_period}, reduction {grid.reduction_factor}) "
            f"over trials")


def config_table(verdict: Any, grid: Grid, tests: dict[str, dict]) -> str:
    """Markdown: one row per configuration over its replicates, best first: the objective's
    mean with its interval over seeds and tracks, its spread, its share of draws won, whether
    it is tied with the winner, and the test figures of the replicates that were tested."""
    col = grid.objective.column
    keys = [k for k in grid.labels if k != "seed"]
    lines = ["| | " + " | ".join(keys or ["config"]) + f" | seeds | {col} mean [95% CI] | std "
             "| P(best) | tied | test/acc | test/track_acc |",
             "|---|" + "---|" * len(keys or [1]) + "---:|---|---:|---:|---|---|---|"]
    for i, c in enumerate(verdict.configs):
        first = c.cells[0]
        done = [tests[x["cell_id"]] for x in c.cells if x["cell_id"] in tests]
        tied = "winner" if i == 0 else {True: "tied", False: "no", None: "?"}[c.tied]
        test_acc = mean_std([x["test/acc"] for x in done]) if done else "not read"
        track = mean_std([x["test/track_acc"] for x in done]) if done else "not read"
        lines.append(f"| {'★' if i == 0 else ''} | " + " | ".join(
            fmt(first[k]) for k in keys) + (" | all" if not keys else "") + f" | "
            f"{len(c.cells)} | {describe(c.value, c.lo, c.hi)} | {c.std:.3f} | "
            f"{fmt(c.p_best, 2)} | {tied} | "
            f"{test_acc} | {track} |")
    return "\n".join(lines) + "\n"


def summary_md(grid: Grid, base: Config, cells: list[dict], verdict: Any, test: dict,
               held_out: dict, prepared: Prepared, facts: SweepFacts, plots: list[str],
               tests: dict[str, dict], reads: str) -> str:
    axes = grid.labels
    col = grid.objective.column
    best = verdict.best
    chosen = {c["cell_id"] for c in verdict.chosen}
    counts = Counter(c["status"] for c in cells)
    split_counts = ", ".join(f"{k} {v}" for k, v in prepared.counts.items())
    status_counts = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    share = training_share(cells, facts)
    lines = [f"# {facts.name}", "", grid.description, "",
             f"**{verdict.line(grid.metric)}.**", "",
             f"**Test** ({_test_words(verdict)}): `test/acc` "
             f"{describe(held_out['test/acc'], *held_out['test/acc interval'])}, "
             f"`test/track_acc` "
             f"{describe(held_out['test/track_acc'], *held_out['test/track_acc interval'])}"
             f"; {reads}.", "",
             f"- command: `{facts.command}`",
             f"- data: {facts.data}: `{prepared.path}` ({split_counts} segments, "
             f"{len(prepared.genres)} genres); split: {prepared.split}",
             f"- preset: `{facts.preset}` ({facts.preset_why}); seed {base.seed}"
             + (f", replicates {grid.replicates} (seeds {', '.join(map(str, grid.axes['seed']))})"
                if verdict.replicates else "")
             + f"; objective `{grid.metric}` ({grid.mode}), each cell judged at its "
             f"{grid.objective.words} (`judge_epoch: {grid.judge_epoch}`); {asha_line(grid)}",
             f"- cells: {len(cells)} ({status_counts}); {facts.trials}",
             f"- plan: {facts.plan}",
             f"- wall {facts.wall_words or f'{facts.wall_s / 60:.1f} min'}; "
             + share_words(share, facts.concurrency),
             f"- run folder: `{facts.run_folder}`",
             f"- intervals: {METHOD}", "", selection_note(verdict, grid), ""]
    if verdict.replicates:
        lines += ["## Configurations over seeds (★ = chosen on the mean; the interval resamples "
                  "seeds and validation tracks)", "", config_table(verdict, grid, tests)]
    lines += cells_table(grid, cells, chosen)
    if grid.test == "every" and not verdict.replicates:
        lines += ["", "## Every cell on the test split (`test: every`: a comparison fixed "
                  "before the sweep)", "", "| cell | test/acc | test/track_acc |",
                  "|---|---:|---:|"]
        lines += [f"| {k} | {v['test/acc']:.4f} | {v['test/track_acc']:.4f} |"
                  for k, v in tests.items()]
    errors = [c for c in cells if c["status"] == "error"]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {c['cell_id']}: {c['error']}" for c in errors]
    cfg = best["_config"]
    lines += ["", "## Best cell", "",
              f"Cell `{best['cell_id']}` ({', '.join(f'{a}={fmt(best[a])}' for a in axes)}),"
              f" judged at its {grid.objective.words}, epoch {test['epoch']}: {grid.metric} "
              f"{best[col]:.4f}.", "",
              f"Its test split ({test['n_segments']} segments, {test['n_tracks']} tracks, "
              f"evaluated once at that epoch's checkpoint): `test/acc` = {test['test/acc']:.4f},"
              f" `test/track_acc` (majority vote per track) = {test['test/track_acc']:.4f}. "
              f"Chance is {1 / len(prepared.genres):.2f}.", "",
              "| genre | test acc |", "|---|---:|"]
    lines += [f"| {g} | {a:.3f} |" for g, a in test["per_genre"].items()]
    lines += ["", "Config of the best cell:", "", "```yaml"]
    lines += [f"{k}: {fmt(v)}" for k, v in cfg.items()]
    lines += ["```", "", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += ["", "## Data split (by track)", "", prepared.table_path.read_text()]
    return "\n".join(lines) + "\n"


def cells_table(grid: Grid, cells: list[dict], chosen: set[str]) -> list[str]:
    """summary.md's table of every cell, best first (★ chosen, ≈ tied with it)."""
    axes = grid.labels
    col = grid.objective.column
    lines = [f"## Cells (sorted by {col}; ★ = chosen, ≈ = tied with it within noise)", "",
              "| | cell | status | " + " | ".join(axes) + f" | epochs run | {col} | 95% CI | "
              "P(best) | judged epoch | best epoch | val/track_acc there | final val/acc | "
              "val/loss | train/loss | train/acc | trial |",
              "|---|---|---|" + "---|" * len(axes) + "---:|---:|---|---:|---:|---:|---:|---:|"
              "---:|---:|---:|---|"]
    sign = 1 if grid.mode == "max" else -1

    def order(t: dict) -> float:
        return -sign * t[col] if t[col] is not None else math.inf

    for t in sorted(cells, key=order):
        mark = "★" if t["cell_id"] in chosen else "≈" if t["tied_with_best"] else ""
        trial = "" if t["trial_id"] == t["cell_id"] else t["trial_id"]
        ci = (f"[{t[f'{col} ci_lo']:.3f}, {t[f'{col} ci_hi']:.3f}]"
              if t.get(f"{col} ci_lo") is not None else "")
        lines.append(f"| {mark} | {t['cell_id']} | {t['status']} | "
                     + " | ".join(fmt(t[a]) for a in axes) + " | "
                     + f"{fmt(t['epoch'])} | {fmt(t[col])} | {ci} | {fmt(t['p_best'], 2)} | "
                     + " | ".join(fmt(t[k]) for k in ("judged_epoch", "best_epoch",
                                                       "judged val/track_acc",
                                                       "val/acc", "val/loss", "train/loss",
                                                       "train/acc"))
                     + f" | {trial} |")
    if any(c["trial_id"] != c["cell_id"] for c in cells):
        lines += ["", "A cell named `TRIAL:eN` is the first N epochs of Tune trial TRIAL, read "
                      "from it (the loop is seeded and its schedule does not read the epoch "
                      "count, so these are the numbers the cell would give alone)."]
    return lines


def selection_note(verdict: Any, grid: Grid) -> str:
    """Why the winner's validation figure runs high, and what stands for it instead."""
    e = verdict.estimate
    if e is None or e.among < 2:
        return ""
    return (f"The winner was chosen as the best of {e.among} on these validation tracks, so "
            f"its own figure runs high (the largest of several noisy values; a test split, "
            f"which chose nothing, does not share that luck). Choosing again in each of the "
            f"bootstrap's draws and scoring the draw's choice on the tracks it left out gives "
            f"{grid.metric} {describe(e.value, e.lo, e.hi)} (Monte Carlo error "
            f"{e.mc_error:.3f}): what this choice delivers. P(best) is the share of draws a "
            f"configuration wins: descriptive, not the probability that it is best.")


def _test_words(verdict: Any) -> str:
    if verdict.replicates:
        return (f"the chosen configuration's {len(verdict.chosen)} seeds, each at its "
                f"{verdict.judged_at}, read once each; mean, interval over seeds (t, seed "
                f"means) and test tracks")
    return f"the chosen cell at its {verdict.judged_at}, read once; interval over test tracks"
