"""results/<grid>/: trials and history tables, test evaluation of the best trial, summary, plots.

The report knows nothing of Ray: it reads run records (records.py) that the sweep builds from
Tune's results, and checkpoint folders through `Location`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from raygenre.config import Config
from raygenre.data import Prepared
from raygenre.errors import NoResults
from raygenre.gridfile import Grid
from raygenre.paths import RunPaths
from raygenre.report.evaluate import evaluate
from raygenre.report.index import write_index
from raygenre.report.plots import pipeline_plot, plot_all
from raygenre.report.records import RunRecord, pick_best, trial_rows
from raygenre.report.tables import (
    SweepFacts,
    fmt,
    seed_rows,
    summary_md,
    training_share,
    write_csv,
)

__all__ = ["NoResults", "RunRecord", "SweepFacts", "evaluate", "write_index", "write_pipeline",
           "write_results"]


def write_results(grid: Grid, base: Config, records: list[RunRecord], paths: RunPaths,
                  prepared: Prepared, facts: SweepFacts, carried: dict[str, Any],
                  shaped_by: dict[str, Any]) -> dict[str, Any]:
    """Every file of results/<grid>/; returns best.json's content."""
    out = paths.results
    out.mkdir(parents=True, exist_ok=True)
    objective = grid.objective
    trials, history = trial_rows(records, grid, objective)
    # Tables first: whatever fails later, the sweep's numbers are on disk.
    write_csv(out / "trials.csv", trials)
    write_csv(out / "history.csv", history)
    shutil.copy(prepared.report_path, out / "data_report.csv")
    best = pick_best(trials, objective)
    if best is None:
        (out / "summary.md").write_text(f"# {facts.name}\n\nNo trial reported {grid.metric}; "
                                        f"see errors in trials.csv.\n")
        raise NoResults(f"every trial failed before reporting {grid.metric}; errors in "
                        f"{out / 'trials.csv'}")
    test = _evaluate(best, prepared)
    seeds = None
    if "seed" in grid.labels:
        tests = {t["trial_id"]: test if t is best else _evaluate(t, prepared) for t in trials
                 if t[objective.best_column] is not None}
        seeds = seed_rows(grid, [t for t in trials if t["trial_id"] in tests], tests,
                          objective.best_column)
    best_json = {"grid": grid.name, "trial_id": best["trial_id"], "run_id": best["run_id"],
                 "config": best["_config"], "metric": grid.metric, "mode": grid.mode,
                 grid.metric: best[objective.best_column],
                 "val/acc": _val_acc_at(best, test["epoch"]),
                 "test/acc": test["test/acc"], "test/track_acc": test["test/track_acc"],
                 "epoch": test["epoch"], "checkpoint": test["checkpoint"],
                 "swept": {k: best[k] for k in grid.labels},
                 "base": base.to_dict(), "carried": carried, "n_trials": len(trials),
                 "n_runs": len(records), "wall_s": facts.wall_s,
                 "training_share": training_share(trials, facts),
                 "description": grid.description, "command": facts.command,
                 "per_genre": test["per_genre"], "split": prepared.split,
                 "shaped_by": shaped_by}
    (out / "best.json").write_text(json.dumps(best_json, indent=1) + "\n")
    plots = plot_all(grid, trials, history, best, test, prepared, out)
    (out / "summary.md").write_text(
        summary_md(grid, base, trials, best, test, prepared, facts, plots, seeds))
    write_index(paths.results_root)
    print(f"[results] best trial {best['trial_id']}: {grid.metric} "
          f"{best[objective.best_column]:.3f} (epoch {test['epoch']}), test/acc "
          f"{test['test/acc']:.3f}, test/track_acc {test['test/track_acc']:.3f}")
    return best_json


def _evaluate(trial: dict[str, Any], prepared: Prepared) -> dict[str, Any]:
    if trial["_checkpoint"] is None:
        raise NoResults(f"trial {trial['trial_id']}: no checkpoint of its best epoch "
                        f"({trial['best_epoch']}) was kept")
    return evaluate(trial["_checkpoint"], prepared)


def _val_acc_at(trial: dict[str, Any], epoch: int) -> float | None:
    return next((h.get("val/acc") for h in trial["_run"].history if h["epoch"] == epoch), None)


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
        delta = ", ".join(f"{k}={fmt(v)}" for k, v in b.get("swept", {}).items()) or "(fixed)"
        lines.append(f"| [{b['grid']}]({top}/{b['grid']}/summary.md) | {delta} | "
                     f"{b['val/acc']:.4f} | {b['test/acc']:.4f} | {b['test/track_acc']:.4f} | "
                     f"{b.get('n_trials', '')} | {b.get('wall_s', 0) / 60:.1f} |")
    lines += ["", f"![best accuracy per stage]({png.name})", ""]
    md.write_text("\n".join(lines))
    keep = ("grid", "swept", "val/acc", "test/acc", "test/track_acc", "n_trials", "wall_s")
    (results_root / f"pipeline{suffix}.json").write_text(
        json.dumps([{k: b.get(k) for k in keep} for b in stages], indent=1))
    pipeline_plot(stages, png)
    write_index(results_root)
    return md
