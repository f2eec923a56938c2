"""The README and docs/ quote figures from results files; these tests hold each quote to its file.

A quoted figure carries a marker right after it, invisible when rendered:

    4.6<!--fig results/batch_epoch/summary.md :: /wall ([\\d.]+) min/--> min

The key after `::` (not `|`: markers sit in table cells) reads the file: a `/regex/` with one
group (any text file), `a > b` into a JSON file, `k=v,k=v > column` into a CSV file, or a
RESULT name in results/bench/*.md. The figure must equal the file's value rounded to the
digits the text shows. In the README, every decimal figure outside code must carry a marker or
be one of the few listed below with why.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
MARKER = re.compile(r"(-?\d[\d ]*(?:\.\d+)?)[`*\]]*<!--fig (.+?) :: (.+?)-->")
# README decimals that are not measured by raygenre, with why.
NOT_MEASURED = {
    "0.05": "one track of the main job's 20 validation tracks: arithmetic, 1/20",
    "0.36": "the origin study's own GTZAN test accuracy",
    "3.10": "the Python version",
}


def _value(path: Path, key: str) -> str:
    text = path.read_text()
    if key.startswith("/") and key.endswith("/"):
        m = re.search(key[1:-1], text)
        assert m, f"{path}: no match for {key}"
        return m.group(1)
    if path.suffix == ".json":
        node = json.loads(text)
        for part in key.split(" > "):
            node = node[int(part)] if isinstance(node, list) else node[part]
        return str(node)
    if path.suffix == ".csv":
        where, column = key.split(" > ")
        want = dict(kv.split("=", 1) for kv in where.split(","))
        rows = [r for r in csv.DictReader(text.splitlines())
                if all(r[k] == v for k, v in want.items())]
        assert len(rows) == 1, f"{path}: {len(rows)} rows match {where}"
        return rows[0][column]
    m = re.search(rf"^RESULT \S+ {re.escape(key)}=(\S+)$", text, re.M)
    assert m, f"{path}: no RESULT line for {key}"
    return m.group(1)


def _quotes(page: Path) -> list[tuple[str, str, str]]:
    return [(m.group(1), m.group(2), m.group(3)) for m in MARKER.finditer(page.read_text())]


def _same(shown: str, value: str) -> bool:
    shown = shown.replace(" ", "")
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    return round(float(value), decimals) == float(shown)


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_every_marked_figure_matches_its_file(page: Path) -> None:
    for shown, path, key in _quotes(page):
        assert (REPO / path).exists(), f"{page.name}: {shown} cites {path}, which is missing"
        value = _value(REPO / path, key)
        assert _same(shown, value), f"{page.name}: shows {shown}, {path} [{key}] says {value}"


def test_readme_figures_all_come_from_a_file() -> None:
    text = re.sub(r"```.*?```", "", README.read_text(), flags=re.S)
    text = re.sub(r"`[^`]*`", "", text)
    text = MARKER.sub("", text)
    loose = sorted(set(re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", text)) - set(NOT_MEASURED))
    assert not loose, f"README figures with no results file: {loose}"


# docs/ decimals that are not measured by raygenre's results files, page by page, with why.
DOCS_NOT_MEASURED = {
    "architecture.md": {"2.60": "the Ray release series"},
    "cluster.md": {"2.60": "the Ray release", "2.11": "the torch release",
                   "18.04": "an Ubuntu release", "24.04": "an Ubuntu release",
                   "3.7": "a Python version", "3.12": "a Python version",
                   "0.68": "issue 36's measurement: study-preset CNN1 checkpoints in a bucket",
                   "2.7": "the same measurement (four checkpoints; no file kept)",
                   "0.679": "arithmetic: raygenre.training.checkpoints.checkpoint_bytes "
                            "(printed by bench/checkpoint_traffic.py)"},
    "colab.md": {"1.2": "GTZAN's size as distributed (about 1.2 GB), not measured here"},
    "data.md": {
        "0.90": "a one-off measurement of a waveform MLP on the synthetic set (no file kept)",
        "0.08": "the same one-off measurement", "0.12": "the same one-off measurement",
        "56.6": "arithmetic: CNN1's dense layer at the study's 201x552 input"},
    "grids.md": {"0.95": "a grid setting (ExponentialLR gamma)",
                 "0.5": "a grid setting (ReduceLROnPlateau factor)",
                 "0.2": "a recipe setting (mixup)", "0.1": "a recipe setting (label smoothing)"},
    "limits.md": {"2.7": "the peak GPU allocation on a lent GPU (no results file holds it)"},
    "real-music.md": {
        "0.85": "a render setting (tempo range)", "1.15": "a render setting (tempo range)",
        "0.125": "arithmetic: chance with 8 classes",
        "0.17": "a slow test's measurement, printed (tests/test_music.py bounds it)",
        "0.59": "the same slow test's measurement, printed",
        "0.0": "the wall best.json holds for a rewritten sweep, in minutes (2 s)",
        "0.026": "arithmetic on results/bench/fresh_splits.md's per-sweep table",
        "0.06": "arithmetic on the same table",
        "2.6": "2.64 and 2.79 of results/bench/fresh_splits.md rounded, and hours in words",
        "2.8": "2.79 of results/bench/fresh_splits.md rounded",
        "2.02": "the two-split table at 1d6947f (git show; the file has moved on)",
        "1.66": "the same", "2.51": "the same", "2.018": "the same", "1.656": "the same",
        "2.514": "the same",
        "0.32": "arithmetic: 0.696 - 0.376 from results/best/summary.md",
        "0.304": "arithmetic: 1 - 0.696", "0.624": "arithmetic: 1 - 0.376",
        "0.1": "a recipe setting (label smoothing)",
        "0.36": "the origin study's own GTZAN test accuracy"},
    "robustness.md": {
        "0.758": "a run on another CPU (issue 38's record; its folder was not kept)",
        "0.800": "the committed main job's winner then (results/batch_epoch moves with it)",
        "0.05": "a threshold"},
}


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_docs_figures_all_come_from_a_file(page: Path) -> None:
    """As the README's: every decimal in docs/ outside code carries a marker or is listed,
    with why, in DOCS_NOT_MEASURED."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    text = re.sub(r"`[^`]*`", "", text)
    text = MARKER.sub("", text)
    listed = DOCS_NOT_MEASURED.get(page.name, {})
    loose = sorted(set(re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", text)) - set(listed))
    assert not loose, f"docs/{page.name}: figures with no results file: {loose}"


def test_readme_console_lines_are_the_committed_runs() -> None:
    """The verdict lines the README shows are the committed run's (up to an elided tail)."""
    log = (REPO / "results" / "batch_epoch" / "run.log").read_text()
    shown = [ln for ln in README.read_text().splitlines() if ln.startswith("[results]")]
    assert len(shown) == 2
    for line in shown:
        assert line.split(" (...)")[0] in log, f"not in run.log: {line}"
    best = json.loads((REPO / "results" / "batch_epoch" / "best.json").read_text())
    assert best["verdict"] in log


def test_readme_interval_example_is_the_main_jobs() -> None:
    best = json.loads((REPO / "results" / "batch_epoch" / "best.json").read_text())
    example = (f"{best['val/acc']:.3f} [{best['interval']['low']:.3f}, "
               f"{best['interval']['high']:.3f}]")
    assert f"`{example}`" in README.read_text()


def test_readme_is_a_front_page() -> None:
    assert len(README.read_bytes()) <= 12 * 1024
    for page in re.findall(r"`(docs/[\w-]+\.md)`", README.read_text()):
        assert (REPO / page).exists(), page


def test_readme_test_command_is_what_ci_runs() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    command = next(b.strip() for b in blocks if "pytest" in b)
    assert command in (REPO / ".ci" / "run").read_text()
