"""results/index.html: every sweep and pipeline of a results folder on one page.

Regenerated after every sweep and pipeline, from the files they wrote (best.json, cells.csv,
pipeline*.json, the PNGs). Plain HTML and CSS with images by relative path: it opens from the
disk in any browser, with no server, and moves with the folder. A few lines of script only
mark images that failed to load (`data-loaded`), which a test reads.
"""

from __future__ import annotations

import csv
import json
from html import escape
from pathlib import Path
from typing import Any

from raygenre.report import legacy
from raygenre.report.tables import fmt

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
tr.best td { background: #fff4d6; font-weight: 600; }
code { background: #f3f3f3; padding: 1px 4px; }
.plots img { max-width: 560px; width: 48%; margin: 4px; border: 1px solid #eee;
             vertical-align: top; }
.facts { color: #444; }
.old-rule { color: #8a4b00; }
nav a { margin-right: 1em; }
"""

MARK_IMAGES = """
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img'), bad = 0;
  imgs.forEach(function (i) {
    var ok = i.complete && i.naturalWidth > 0;
    i.dataset.loaded = ok ? 'yes' : 'no'; if (!ok) { bad += 1; }
  });
  document.body.dataset.images = imgs.length + ' images, ' + bad + ' broken';
});
"""

PLOTS = ("heatmap_val_acc.png", "curves_best_worst.png", "val_acc_by_cell.png",
         "confusion_test.png", legacy.OLD_BARS)


def _table(header: list[str], rows: list[list[Any]], best_rows: set[int] | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = ' class="best"' if i in (best_rows or set()) else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{escape(fmt(v))}</td>" for v in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _ci(lo: str, hi: str) -> str:
    a, b = _number(lo or ""), _number(hi or "")
    return "" if a is None or b is None else f"[{a:.3f}, {b:.3f}]"


def _ci_text(value: float | None, lo: float | None, hi: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None
                             else "")


def _tied(text: str) -> str:
    return {"True": "tied", "False": "no"}.get(text, "")


def _sweep(folder: Path, root: Path) -> tuple[str, str]:
    """(anchor, HTML section) for one sweep's results folder."""
    best = legacy.current_best(json.loads((folder / "best.json").read_text()))
    rel = folder.relative_to(root).as_posix()
    anchor = rel.replace("/", "-")
    metric = best.get("metric", "val/acc")
    # The judged column: `last/<metric>` or `best/<metric>` (a best.json from before judging
    # rules were named judged every cell at its best epoch).
    col = f"{best.get('judge_epoch', 'best')}/{metric}"
    table = legacy.cells_file(folder).name
    with open(folder / table) as f:
        reader = csv.DictReader(f)
        names = legacy.columns_of(list(reader.fieldnames or []))
        cells = [legacy.renamed(row, names) for row in reader]
    labels = list(best.get("swept", {}))
    sign = -1 if best.get("mode", "max") == "max" else 1
    cells.sort(key=lambda t: (_number(t.get(col, "")) is None, sign * (_number(t.get(col, ""))
                                                                      or 0.0)))
    header = ["cell", "status", *labels, "epochs run", col, "95% CI", "P(best)",
              "tied with best", "judged epoch", "best epoch", "final val/acc"]
    rows = [[t["cell_id"], t["status"], *(t.get(k, "") for k in labels), t["epoch"],
             _number(t.get(col, "")), _ci(t.get(f"{col} ci_lo", ""), t.get(f"{col} ci_hi", "")),
             _number(t.get("p_best", "")), _tied(t.get("tied_with_best", "")),
             t.get("judged_epoch", t.get("best_epoch", "")), t.get("best_epoch", ""),
             _number(t["val/acc"])] for t in cells]
    chosen = set(best.get("chosen_cells") or [best["cell_id"]])
    marked = {i for i, t in enumerate(cells) if t["cell_id"] in chosen}
    genres = best.get("per_genre", {})
    iv = best.get("test/acc interval") or [None, None]
    tiv = best.get("test/track_acc interval") or [None, None]
    reads = best.get("test_reads")
    parts = [f'<h2 id="{escape(anchor)}">{escape(rel)}</h2>',
             f'<p class="facts">{escape(best.get("description", ""))}</p>',
             f"<p>Command: <code>{escape(best.get('command', ''))}</code></p>",
             f"<p>Data: {escape(str(best.get('data', '')))}; split: "
             f"{escape(str(best.get('split', '')))}</p>",
             f"<p class=\"verdict\"><b>{escape(best.get('verdict', ''))}</b></p>",
             *([f'<p class="old-rule"><b>{escape(legacy.OLD_RULE)}</b></p>']
               if legacy.judged_before_selection(best) else []),
             "<p><b>Test</b> (read once per tested cell"
             + (f"; this test split has been read {reads} times in all" if reads else "")
             + f"): segment accuracy {escape(_ci_text(best['test/acc'], *iv))}, track accuracy"
             f" (majority vote) {escape(_ci_text(best['test/track_acc'], *tiv))}.</p>"]
    if (folder / "configs.csv").exists() and best.get("replicates", 1) > 1:
        with open(folder / "configs.csv") as f:
            configs = list(csv.DictReader(f))
        mean = next(k for k in configs[0] if k.startswith("mean "))
        parts.append("<p>Per configuration, over seeds (chosen on the mean; the interval "
                     "resamples seeds and validation tracks):</p>" + _table(
                         ["configuration", "seeds", mean, "95% CI", "std", "P(best)",
                          "tied with best"],
                         [[c["config"], c["replicates"], _number(c[mean]),
                           _ci(c["ci_lo"], c["ci_hi"]),
                           _number(c[mean.replace("mean ", "std ")]),
                           _number(c.get("p_best", "")), _tied(c["tied_with_best"])]
                          for c in configs], {0}))
    parts.append(_table(header, rows, marked))
    if genres:
        parts.append(_table(["genre", "test accuracy"], [[g, a] for g, a in genres.items()]))
    cfg = best.get("config", {})
    parts.append("<details><summary>Config of the best cell</summary>"
                 + _table(["key", "value"], [[k, v] for k, v in cfg.items()]) + "</details>")
    imgs = [f'<img src="{escape(rel)}/{p}" alt="{escape(rel)}: {p}">' for p in PLOTS
            if (folder / p).exists()]
    parts.append(f'<div class="plots">{"".join(imgs)}</div>')
    parts.append(f'<p><a href="{escape(rel)}/summary.md">summary.md</a> · '
                 f'<a href="{escape(rel)}/{table}">{table}</a> · '
                 f'<a href="{escape(rel)}/history.csv">history.csv</a></p>')
    return anchor, "\n".join(parts)


def _pipeline(path: Path, root: Path) -> str:
    rows = json.loads(path.read_text())
    png = path.with_suffix(".png")
    table = _table(["stage", "winner", "val/acc", "95% CI", "tied within noise", "carried",
                    "test/acc", "test/track_acc", "cells", "wall min"],
                   [[r["grid"], ", ".join(f"{k}={fmt(v)}" for k, v in r.get("swept", {}).items())
                     or "(fixed)", r["val/acc"],
                     _ci(str((r.get("interval") or {}).get("low", "")),
                         str((r.get("interval") or {}).get("high", ""))),
                     "; ".join(r.get("tied_with") or []) or "none",
                     "the winner" if (r.get("carry") or {}).get("is_winner", True)
                     else r["carry"]["label"], r["test/acc"], r["test/track_acc"],
                     r.get("n_cells", ""), r.get("wall_s", 0) / 60] for r in rows])
    img = (f'<div class="plots"><img src="{escape(png.name)}" alt="{escape(png.name)}"></div>'
           if png.exists() else "")
    return f"<h2>{escape(path.stem)}</h2>{table}{img}"


def write_index(results_root: Path) -> Path:
    """Write results_root/index.html from whatever sweeps and pipelines it holds."""
    sweeps = sorted(p.parent for p in results_root.glob("**/best.json")
                    if legacy.cells_file(p.parent) is not None)
    sections = [_sweep(folder, results_root) for folder in sweeps]
    pipelines = [_pipeline(p, results_root) for p in sorted(results_root.glob("pipeline*.json"))]
    nav = " ".join(f'<a href="#{escape(a)}">{escape(a)}</a>' for a, _ in sections)
    page = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
            "<title>raygenre results</title>", f"<style>{STYLE}</style>",
            f"<script>{MARK_IMAGES}</script></head><body>",
            "<h1>raygenre results</h1>",
            f"<p class=\"facts\">{len(sections)} sweep(s) in <code>{escape(results_root.name)}"
            f"/</code>. Each is a folder of tables and plots beside this page, which is made anew "
            f"after every sweep.</p>", f"<nav>{nav}</nav>", *pipelines, *(s for _, s in sections),
            "</body></html>"]
    out = results_root / "index.html"
    out.write_text("\n".join(page))
    return out
