"""The plots of one sweep and of the pipeline (PNG files, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on clusters or CI
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from raygenre.data.prepared import Prepared  # noqa: E402
from raygenre.grid.file import Grid  # noqa: E402
from raygenre.report.tables import fmt  # noqa: E402


def _label(t: dict, axes: list[str]) -> str:
    return ", ".join(f"{a}={fmt(t[a])}" for a in axes) or t["cell_id"]


def _axis_values(rows: list[dict], key: str) -> list[Any]:
    """An axis's distinct values in a readable order: numbers ascending, anything else (names,
    lists of layer sizes) in the grid's order. Compared by their text: lists are not hashable."""
    seen: dict[str, Any] = {}
    for t in rows:
        seen.setdefault(fmt(t[key]), t[key])
    values = list(seen.values())
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        values.sort()
    return values


def objective_bars(grid: Grid, ok: list[dict], chosen: set[str], out: Path) -> str:
    """Each cell's judged value (the objective at its judged epoch, what the winner is chosen
    on) with its 95 % interval over validation tracks; the chosen cell(s) orange, tied ones
    green."""
    col, sign = grid.objective.column, (1 if grid.mode == "max" else -1)
    ok_sorted = sorted(ok, key=lambda t: -sign * t[col])
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(ok_sorted) + 2), 4))
    values = [t[col] for t in ok_sorted]
    lo = [t[col] - t[f"{col} ci_lo"] if t.get(f"{col} ci_lo") is not None else 0.0
          for t in ok_sorted]
    hi = [t[f"{col} ci_hi"] - t[col] if t.get(f"{col} ci_hi") is not None else 0.0
          for t in ok_sorted]
    colors = ["tab:orange" if t["cell_id"] in chosen else "tab:green" if t["tied_with_best"]
              else "tab:blue" for t in ok_sorted]
    ax.bar(range(len(ok_sorted)), values, color=colors, yerr=[lo, hi], capsize=2,
           error_kw={"elinewidth": 0.8})
    ax.set_xticks(range(len(ok_sorted)), [_label(t, grid.labels) for t in ok_sorted],
                  rotation=70, ha="right", fontsize=7)
    ax.set_ylabel(f"{col} (95% CI over val tracks)")
    ax.set_title(f"{grid.name}: {col} per cell, at its {grid.objective.words} (orange: chosen;"
                 f" green: tied within noise)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "val_acc_by_cell.png", dpi=110)
    plt.close(fig)
    return "val_acc_by_cell.png"


def heatmap(grid: Grid, axes: list[str], squares: list[dict], out: Path, what: str) -> str:
    """The judged value (each configuration's at its judged epoch, or its mean over seeds: the
    winner is chosen on) over a two-axis grid; the chosen square boxed, squares tied with it
    marked '≈'; a cell ASHA stopped says at which epoch. `squares`: one per configuration (its
    cells over seeds), with its axes' values, "value", "tied", "chosen", "status" and "epoch"."""
    a, b = axes
    xs, ys = _axis_values(squares, b), _axis_values(squares, a)
    xi, yi = {fmt(x): j for j, x in enumerate(xs)}, {fmt(y): i for i, y in enumerate(ys)}
    vals = [[math.nan] * len(xs) for _ in ys]
    notes = [[""] * len(xs) for _ in ys]
    boxes = []
    for c in squares:
        i, j = yi[fmt(c[a])], xi[fmt(c[b])]
        if c["value"] is None:
            notes[i][j] = "error" if c["status"] == "error" else "-"
            continue
        vals[i][j] = c["value"]
        mark = " ≈" if c["tied"] else ""
        p_best = c.get("p_best")
        notes[i][j] = (f"{c['value']:.2f}{mark}"
                       + (f"\nP {p_best:.2f}" if p_best is not None else "")
                       + (f"\nstopped e{c['epoch']}" if c["status"] == "stopped_early" else ""))
        if c["chosen"]:
            boxes.append((i, j))
    fig, ax = plt.subplots(figsize=(1.3 * len(xs) + 2.5, 0.7 * len(ys) + 2))
    im = ax.imshow(vals, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(xs)), [fmt(x) for x in xs])
    ax.set_yticks(range(len(ys)), [fmt(y) for y in ys])
    ax.set_xlabel(b)
    ax.set_ylabel(a)
    finite = [v for row in vals for v in row if not math.isnan(v)]
    mid = (min(finite) + max(finite)) / 2 if finite else 0.0
    for i in range(len(ys)):
        for j in range(len(xs)):
            dark = math.isnan(vals[i][j]) or vals[i][j] < mid  # viridis is dark low
            ax.text(j, i, notes[i][j], ha="center", va="center", fontsize=7,
                    color="w" if dark else "k")
    for i, j in boxes:
        ax.add_patch(matplotlib.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False,
                                                  edgecolor="tab:orange", linewidth=2.5))
    fig.colorbar(im, label=what)
    note = "\n(stopped eN: ASHA stopped its trial at epoch N)" if grid.asha else ""
    ax.set_title(f"{grid.name}: {what} by {a} x {b}\nboxed: chosen; ≈: tied with it within "
                 f"noise; P: share of bootstrap draws it wins{note}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "heatmap_val_acc.png", dpi=110)
    plt.close(fig)
    return "heatmap_val_acc.png"


def curves(grid: Grid, ok: list[dict], history: list[dict], best: dict, out: Path) -> str:
    """Train vs val loss and accuracy of the best and the worst cell."""
    col, sign = grid.objective.column, 1 if grid.mode == "max" else -1
    worst = min(ok, key=lambda t: sign * t[col])
    fig, (l_ax, a_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for t, color in ((best, "tab:green"), (worst, "tab:red")):
        rows = [h for h in history if h["cell_id"] == t["cell_id"]]
        ep = [h["epoch"] for h in rows]
        tag = f"{'best' if t is best else 'worst'} ({_label(t, grid.labels)})"
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
    fig.suptitle(f"{grid.name}: best and worst cell")
    fig.tight_layout()
    fig.savefig(out / "curves_best_worst.png", dpi=110)
    plt.close(fig)
    return "curves_best_worst.png"


def confusion(grid: Grid, test: dict, prepared: Prepared, out: Path) -> str:
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
    return "confusion_test.png"


def plot_all(grid: Grid, cells: list[dict], history: list[dict], verdict: Any, test: dict,
             prepared: Prepared, out: Path) -> list[str]:
    col = grid.objective.column
    best = verdict.best
    chosen = {t["cell_id"] for t in verdict.chosen}
    ok = [t for t in cells if t["val/acc"] is not None and t[col] is not None]
    made = [objective_bars(grid, ok, chosen, out)]
    axes = [k for k in grid.labels if k != "seed"]
    if len(axes) == 2:
        judged = {t["cell_id"] for c in verdict.configs for t in c.cells}
        squares = [{a: c.cells[0][a] for a in axes} | {
            "value": c.value, "tied": c.tied, "chosen": i == 0, "p_best": c.p_best,
            "status": c.cells[0]["status"], "epoch": c.cells[0]["epoch"]}
            for i, c in enumerate(verdict.configs)]
        squares += [{a: t[a] for a in axes} | {"value": None, "tied": None, "chosen": False,
                                             "status": t["status"], "epoch": t["epoch"]}
                  for t in cells if t["cell_id"] not in judged]
        what = (f"{col}, mean over seeds" if verdict.replicates
                else f"{col} (its {grid.objective.words})")
        made.append(heatmap(grid, axes, squares, out, what))
    made += [curves(grid, ok, history, best, out), confusion(grid, test, prepared, out)]
    return made


def pipeline_plot(stages: list[dict[str, Any]], png: Path) -> None:
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(stages) + 2), 4))
    xs = range(len(stages))
    for off, key, color in ((-0.2, "val/acc", "tab:blue"), (0.2, "test/acc", "tab:orange")):
        ax.bar([x + off for x in xs], [b[key] for b in stages], width=0.4, label=key,
               color=color)
    ax.set_xticks(list(xs), [b["grid"] for b in stages], rotation=20)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("best cell per stage: validation and test accuracy")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
