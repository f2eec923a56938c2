"""results/<grid>/: cells and history tables, test evaluation of the best cell, summary, plots.

The report knows nothing of Ray: it reads trial records (records.py) that the sweep builds from
Tune's results, and checkpoint folders through `Location`.
May import: raygenre.config, .errors, .storage, .paths, raygenre.data, raygenre.training,
raygenre.grid. Never sweep/ and never Ray (a results folder is read on machines without Ray).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from raygenre.config import Config
from raygenre.data import ledger
from raygenre.data.prepared import Prepared, split_batches
from raygenre.errors import NoResults
from raygenre.grid.file import Grid
from raygenre.paths import RunPaths
from raygenre.report import legacy
from raygenre.report.evaluate import evaluate
from raygenre.report.index import write_index
from raygenre.report.plots import pipeline_plot, plot_all
from raygenre.report.records import TrialRecord, cell_rows
from raygenre.report.tables import (
    SweepFacts,
    fmt,
    summary_md,
    training_share,
    write_csv,
)
from raygenre.report.uncertainty import (
    LEVEL,
    METHOD,
    Split,
    describe,
    seed_interval,
    track_stats,
)
from raygenre.report.verdict import CARRY_RULE, carried_choice, judge
from raygenre.training.checkpoints import PREDICTIONS_FILE, ValPredictions

__all__ = ["CELLS_FILE", "TEST_PREDICTIONS", "NoResults", "SweepFacts", "TrialRecord", "evaluate",
           "read_test_predictions", "write_index", "write_pipeline", "write_results"]


def write_results(grid: Grid, base: Config, records: list[TrialRecord], paths: RunPaths,
                  prepared: Prepared, facts: SweepFacts, carried: dict[str, Any],
                  shaped_by: dict[str, Any]) -> dict[str, Any]:
    """Every file of results/<grid>/; returns best.json's content."""
    out = paths.results
    out.mkdir(parents=True, exist_ok=True)
    _clear_old_names(out)
    objective = grid.objective
    # This folder's best.json from before (a --fresh start, another storage) keeps a copy of
    # the reads: merged, so they are not lost with the run folder or the cache.
    test_ledger = ledger.of(prepared, results=[out])
    test_ledger.reads()
    cells, history = cell_rows(records, grid, objective)
    # Tables first: whatever fails later, the sweep's numbers are on disk.
    write_csv(out / CELLS_FILE, cells)
    write_csv(out / "history.csv", history)
    shutil.copy(prepared.report_path, out / "data_report.csv")
    verdict = judge(cells, grid, split_of(prepared, "val"), trial_predictions)
    if verdict is None:
        (out / "summary.md").write_text(f"# {facts.name}\n\nNo cell reported {grid.metric}; "
                                        f"see errors in {CELLS_FILE}.\n")
        raise NoResults(f"every trial failed before reporting {grid.metric}; errors in "
                        f"{out / CELLS_FILE}")
    write_csv(out / CELLS_FILE, cells)  # now with intervals and ties
    write_csv(out / "configs.csv", [c.row(grid) for c in verdict.configs])
    best = verdict.best
    tested = ([c for c in cells if c[objective.column] is not None]
              if grid.test == "every" else verdict.chosen)
    tests = {c["cell_id"]: _evaluate(c, prepared, facts.name) for c in tested}
    write_test_predictions(out / TEST_PREDICTIONS, tests, prepared.genres)
    test = tests[best["cell_id"]]
    chosen = [tests[c["cell_id"]] for c in verdict.chosen]
    held_out = held_out_summary(chosen)
    carry = carried_choice(verdict, grid)
    winner = verdict.winner
    best_json = {"grid": grid.name, "cell_id": best["cell_id"], "trial_id": best["trial_id"],
                 "config": best["_config"], "metric": grid.metric, "mode": grid.mode,
                 grid.metric: winner.value,
                 "val/acc": _mean([_val_acc_at(c, tests[c["cell_id"]]["epoch"])
                                   for c in verdict.chosen]),
                 "test/acc": held_out["test/acc"], "test/track_acc": held_out["test/track_acc"],
                 "judge_epoch": grid.judge_epoch, "judged_at": verdict.judged_at,
                 "p_best": winner.p_best,
                 "interval": {"metric": grid.metric, "low": winner.lo, "high": winner.hi,
                              "level": LEVEL, "method": METHOD,
                              "over": "seeds and validation tracks" if verdict.replicates
                              else "validation tracks"},
                 # The winner's value with its choice priced in (what the validation figure
                 # above, chosen as the best of several on the same tracks, is not).
                 "winner_estimate": (verdict.estimate.as_json() if verdict.estimate
                                     else None),
                 "test/acc interval": held_out["test/acc interval"],
                 "test/track_acc interval": held_out["test/track_acc interval"],
                 "tied_with": [c.label for c in verdict.tied],
                 "ties": [{"config": c.label, "gap": c.gap, "gap_low": c.gap_lo,
                           "p_best": c.p_best, "tied": c.tied} for c in verdict.configs[1:]],
                 "verdict": verdict.line(grid.metric),
                 "replicates": len(verdict.chosen),
                 "chosen_cells": [c["cell_id"] for c in verdict.chosen],
                 "carry": carry,
                 "test_reads": len(test_ledger.reads()),
                 "test_ledger": test_ledger.summary(),
                 "epoch": test["epoch"], "checkpoint": test["checkpoint"],
                 "swept": {k: best[k] for k in grid.labels},
                 "base": base.to_dict(), "carried": carried, "n_cells": len(cells),
                 "n_trials": len(records), "wall_s": facts.wall_s,
                 "training_share": training_share(cells, facts),
                 "description": grid.description, "command": facts.command,
                 "per_genre": test["per_genre"], "data": facts.data,
                 "data_source": facts.data_source, "run_folder": facts.run_folder,
                 "split": prepared.split,
                 "shaped_by": shaped_by}
    (out / "best.json").write_text(json.dumps(best_json, indent=1) + "\n")
    plots = plot_all(grid, cells, history, verdict, test, prepared, out)
    (out / "summary.md").write_text(
        summary_md(grid, base, cells, verdict, test, held_out, prepared, facts, plots, tests,
                   test_ledger.describe()))
    write_index(paths.results_root)
    _print_verdict(verdict, grid, held_out, len(chosen), test_ledger.describe())
    return best_json


def _clear_old_names(out: Path) -> None:
    for old in (legacy.OLD_CELLS_FILE, legacy.OLD_BARS):
        # An earlier sweep's files under their names from before: they would sit beside this
        # sweep's cells.csv and bars as if they were its own.
        (out / old).unlink(missing_ok=True)


def _print_verdict(verdict: Any, grid: Grid, held_out: dict[str, Any], n_chosen: int,
                   reads: str) -> None:
    print(f"[results] {verdict.line(grid.metric)}")
    what = (f"mean of {n_chosen} seeds, " if verdict.replicates else "")
    print(f"[results] test ({what}read once per cell): test/acc "
          f"{describe(held_out['test/acc'], *held_out['test/acc interval'])}, test/track_acc "
          f"{describe(held_out['test/track_acc'], *held_out['test/track_acc interval'])}; "
          f"{reads}")


TEST_PREDICTIONS = "test_predictions.csv"
CELLS_FILE = "cells.csv"


def write_test_predictions(path: Path, tests: dict[str, dict[str, Any]],
                           genres: tuple[str, ...] | list[str]) -> None:
    """Every tested cell's class probabilities on each test segment, so that a comparison
    across sweeps (bench/fresh_splits.py: the same recipes on other splits) can pair cells
    on the same tracks without reading the test split again."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cell_id", "segment", "track", "label", "predicted",
                    *(f"p:{g}" for g in genres)])
        for cell_id, test in tests.items():
            probs = test["_probs"]
            for i, (label, track) in enumerate(zip(test["_labels"].tolist(), test["_tracks"],
                                                    strict=True)):
                row = probs[i].tolist()
                w.writerow([cell_id, i, track, genres[label], genres[int(probs[i].argmax())],
                            *(f"{p:.6g}" for p in row)])


def read_test_predictions(path: Path) -> dict[str, tuple[np.ndarray, list[int], list[str]]]:
    """`write_test_predictions`'s file: cell_id -> (probabilities, label indices, tracks)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    # "trial_id": the first column's name before cells and trials took Ray's words.
    if not rows or rows[0][1:5] != ["segment", "track", "label", "predicted"] \
            or rows[0][0] not in ("cell_id", "trial_id"):
        raise ValueError(f"{path}: not a test predictions file (its header is {rows[:1]})")
    genres = [c.removeprefix("p:") for c in rows[0][5:]]
    index = {g: i for i, g in enumerate(genres)}
    out: dict[str, tuple[list, list[int], list[str]]] = {}
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != len(rows[0]) or row[3] not in index:
            raise ValueError(f"{path}, line {n}: expected {len(rows[0])} fields and a label "
                             f"among {genres}, got {row[:5]}")
        probs, labels, tracks = out.setdefault(row[0], ([], [], []))
        probs.append([float(p) for p in row[5:]])
        labels.append(index[row[3]])
        tracks.append(row[2])
    return {k: (np.asarray(p, dtype=np.float64), y, t) for k, (p, y, t) in out.items()}


def split_of(prepared: Prepared, split: str) -> Split:
    """A split's labels and tracks in file order (what the loop's predictions follow)."""
    labels: list[int] = []
    tracks: list[str] = []
    for batch in split_batches(prepared, split, columns=["label", "track"]):
        labels += batch.column("label").to_pylist()
        tracks += batch.column("track").to_pylist()
    return Split.of(labels, tracks)


def trial_predictions(trial: TrialRecord) -> ValPredictions:
    """The validation record in a trial's latest checkpoint (every epoch it ran)."""
    if trial.latest is None:
        return ValPredictions()
    f = trial.latest / PREDICTIONS_FILE
    return ValPredictions.from_bytes(f.read_bytes() if f.exists() else None)


def held_out_summary(tests: list[dict[str, Any]]) -> dict[str, Any]:
    """The chosen configuration's test figures: the mean over its replicates (one without),
    each with an interval over test tracks (and seeds, with replicates)."""
    split = Split.of(tests[0]["_labels"].numpy(), tests[0]["_tracks"])
    weights = split.draws()
    stats = [track_stats(t["_probs"].log(), split) for t in tests]
    out: dict[str, Any] = {}
    for name in ("acc", "track_acc"):
        key = f"test/{name}"
        out[key] = _mean([t[key] for t in tests])
        per_seed = np.stack([s.draws(weights, name) for s in stats], axis=1)
        values = np.array([s.value(name) for s in stats])
        out[f"{key} interval"] = list(seed_interval(values, per_seed, split.track_df))
    return out


def _mean(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return sum(got) / len(got) if got else None


def _evaluate(cell: dict[str, Any], prepared: Prepared, sweep: str) -> dict[str, Any]:
    if cell["_checkpoint"] is None:
        raise NoResults(f"cell {cell['cell_id']}: no checkpoint of its judged epoch "
                        f"({cell['judged_epoch']}, its {cell['judged_at']}) was kept")
    return evaluate(cell["_checkpoint"], prepared,
                    reader=f"{sweep}: final evaluation of cell {cell['cell_id']}")


def _val_acc_at(cell: dict[str, Any], epoch: int) -> float | None:
    return next((h.get("val/acc") for h in cell["_trial"].history if h["epoch"] == epoch), None)


def write_pipeline(stages: list[dict[str, Any]], results_root: Path, top: str) -> Path:
    """pipeline.md (one row per stage, with what was tied and what was carried) and a plot of
    the best accuracy per stage."""
    suffix = top[len("all"):]  # "" or "-smoke"
    md, png = results_root / f"pipeline{suffix}.md", results_root / f"pipeline{suffix}.png"
    lines = [f"# The study's pipeline ({top})", "",
             "Each stage starts from the stages before it (keys listed under `carry:` in its "
             "grid file). When configurations are tied with a stage's winner within noise, the "
             f"one carried is chosen by a fixed rule: {CARRY_RULE}.", "",
             "| stage | winner | val objective [95% CI] | tied within noise | carried | "
             "test/acc | test/track_acc | cells | wall min |",
             "|---|---|---|---|---|---:|---:|---:|---:|"]
    for b in stages:
        delta = ", ".join(f"{k}={fmt(v)}" for k, v in b.get("swept", {}).items()) or "(fixed)"
        iv = b.get("interval") or {}
        carry = b.get("carry") or {}
        carried = ("the winner" if carry.get("is_winner", True)
                   else f"{carry['label']} (fewer epochs)")
        lines.append(f"| [{b['grid']}]({top}/{b['grid']}/summary.md) | {delta} | "
                     f"{b['metric']} {describe(b[b['metric']], iv.get('low'), iv.get('high'))}"
                     f" | {'; '.join(b.get('tied_with', [])) or 'none'} | {carried} | "
                     f"{b['test/acc']:.4f} | {b['test/track_acc']:.4f} | "
                     f"{b.get('n_cells', '')} | {b.get('wall_s', 0) / 60:.1f} |")
    lines += ["", f"![best accuracy per stage]({png.name})", ""]
    md.write_text("\n".join(lines))
    keep = ("grid", "swept", "metric", "val/acc", "test/acc", "test/track_acc", "interval",
            "tied_with", "carry", "n_cells", "wall_s")
    (results_root / f"pipeline{suffix}.json").write_text(
        json.dumps([{k: b.get(k) for k in keep} for b in stages], indent=1))
    pipeline_plot(stages, png)
    write_index(results_root)
    return md
