"""`best`'s recipes on test splits that no search has read: each split seed draws a new split
of the set (by work, on the real-music set), the sweep runs every recipe on it under the
training seeds asked for, and each recipe's chosen checkpoint is read on that split's test
tracks once. Then, per recipe, the mean test accuracy over splits and seeds, and a paired
interval of the error ratio of each recipe against the reference (`small_cnn`).

    raygenre-fresh-splits [--splits 1,2] [--seeds 0] [--data builtin:music] [--parallel 2]
                          [--out DIR] [--storage DIR] [--smoke] [--report-only]
    (or python -m raygenre.tools.fresh_splits ...), from the checkout's root: results go to
    results/fresh_splits and results/bench/fresh_splits.md under the current folder.

Results: OUT/split_K/seed_S/best (one sweep's folder), OUT/split_K_seed_S.log (its console).

Why a new tool and not `best --seed K`: the comparison needs several sweeps' test predictions
paired on the same tracks (each sweep writes them to test_predictions.csv), and a claim is
only as fresh as its splits, so each split's reads are part of the table: the ledger's count
before the split's first sweep (OUT/reads_before.json keeps it), one read per cell since, and
every read of the split the ledger knows (raygenre.data.ledger, keyed by the split's test tracks:
merged from this machine's cache, each sweep's storage and the copies in the results folders'
best.json), the same count the last sweep's summary gives. A split sharing test tracks with
another says how many.

Each (split, training seed) pair is one `python -m raygenre.grid` sweep of a copy of
grids/best.yaml whose `seed` axis is that one training seed while `--seed K` draws the split:
a pair per sweep, so a later call adds seeds to a split without running the finished ones
again. `--parallel` sweeps run at once, each one trial at a time (`--max-concurrent 1
--cpus-per-trial 1`), so that the long recipe of one sweep trains beside the short ones of
another. Interrupted, it resumes: a finished sweep is read from its results, a started one
continues (`--resume`).

The intervals (raygenre.report.pooled): a recipe's error is the mean over splits of its
mean error over the training seeds. Its variance has two parts, added: the tracks' (a bootstrap
that resamples each split's test tracks, stratified by class, with the same draws for every
recipe, so a ratio is paired on tracks) and, with several seeds, each split's seed-to-seed
spread; the interval is t at Satterthwaite's degrees of freedom (raygenre.report.uncertainty's
seed treatment). Error ratios on the log scale (the delta method).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

import raygenre
from raygenre.grid.file import builtin_grids
from raygenre.report import TEST_PREDICTIONS, read_test_predictions
from raygenre.report.pooled import accuracy_interval, errors_of, ratio_interval
from raygenre.report.uncertainty import DRAWS, SEED, Split, TrackStats, describe, track_stats
from raygenre.tools.page import argv_command, write_page

GRID = "best"
REFERENCE = "small_cnn"  # the recipe the README's claim is about


@dataclass
class SplitRun:
    """One split's sweeps (one per training seed), as their results folders hold them."""

    split_seed: int
    split: Split
    stats: dict[str, list[TrackStats]]  # recipe -> one per training seed, in seed order
    val_acc: dict[str, list[float]]  # recipe -> best val/acc per training seed
    tested_here: int  # reads these sweeps made: one per cell
    reads: int  # every read of the split the results folders' ledger copies hold
    reads_how: str  # where that count comes from, in words
    wall_s: list[float]  # each sweep's wall
    wall_partial: list[bool]  # its wall misses commands before a resume (see `walls`)


def derived_grid(seeds: list[int], folder: Path) -> Path:
    """grids/best.yaml with its `seed` axis replaced by `seeds`; the rest as committed. The
    file keeps the name best.yaml, so that the sweep and its results folder are `best`."""
    spec = yaml.safe_load((builtin_grids() / f"{GRID}.yaml").read_text())
    spec["grid"] = {**spec.get("grid", {}), "seed": seeds}
    spec["description"] = (f"{spec.get('description', GRID)} (raygenre-fresh-splits: training "
                           f"seeds {seeds})")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{GRID}.yaml"
    path.write_text("# Written by raygenre-fresh-splits from grids/best.yaml.\n"
                    + yaml.safe_dump(spec, sort_keys=False))
    return path


def seed_grid(out: Path, seed: int) -> Path:
    return derived_grid([seed], out / "grids" / f"seed_{seed}")


def sweep_argv(split_seed: int, seed: int, args: argparse.Namespace) -> list[str]:
    grid = seed_grid(Path(args.out), seed)
    storage = Path(args.storage) / f"split_{split_seed}" / f"seed_{seed}"
    argv = [sys.executable, "-m", "raygenre.grid", str(grid), "--data", args.data,
            "--seed", str(split_seed), "--preset", "cpu",
            "--results", str(Path(args.out) / f"split_{split_seed}" / f"seed_{seed}"),
            "--storage", str(storage), "--max-concurrent", str(args.max_concurrent),
            "--cpus-per-trial", str(args.cpus_per_trial)]
    if args.cache:
        argv += ["--cache", args.cache]
    if args.smoke:
        argv.append("--smoke")
    # A run folder of this grid from an interrupted call: continue it, do not start over.
    if (storage / grid_run_name(args)).exists():
        argv.append("--resume")
    return argv


def grid_run_name(args: argparse.Namespace) -> str:
    return GRID + ("-smoke" if args.smoke else "")


def results_folder(out: Path, split_seed: int, seed: int, smoke: bool) -> Path:
    return out / f"split_{split_seed}" / f"seed_{seed}" / (GRID + ("-smoke" if smoke else ""))


def prepare_splits(grid: Path | None, args: argparse.Namespace) -> dict[int, int]:
    """Each split prepared here, one after the other, before any sweep: the set is rendered
    once (parallel sweeps would each render it), and each split's ledger is read before its
    sweep. A split whose test tracks were already read is refused unless this tool's own
    earlier call read them (its record in OUT/reads_before.json). Returns the reads found.
    With --report-only nothing is prepared: the record is all it needs."""
    from raygenre.data import ledger
    from raygenre.grid.file import load_grid
    from raygenre.grid.resolved import resolve_base
    from raygenre.sweep.inputs import caches, prepare_data

    out = Path(args.out)
    record = out / "reads_before.json"
    seen = {int(k): v for k, v in json.loads(record.read_text()).items()} \
        if record.exists() else {}
    if args.report_only:
        missing = [k for k in args.splits if k not in seen]
        if missing:
            raise SystemExit(f"[fresh] --report-only: splits {missing} are not in {record}; "
                             f"run them first")
        return seen
    for k in args.splits:
        base = resolve_base(load_grid(str(grid), k), "cpu", k)
        prepared = prepare_data(args.data, caches(args.cache), base, args.smoke)
        book = ledger.Ledger(prepared.path, split_storages(args, k),
                             [results_folder(out, k, s, args.smoke) for s in args.seeds])
        reads = len(book.reads())
        if k not in seen:
            if reads and not args.allow_read:
                raise SystemExit(f"[fresh] split seed {k}: its test tracks were read {reads} "
                                 f"times already (ledger split {book.key}); a fresh split "
                                 f"needs another seed (or --allow-read)")
            seen[k] = reads
            record.write_text(json.dumps(seen, indent=1) + "\n")
        overlap = "".join(f"; {n} of its {len(book.split.tracks)} test tracks are in split "
                          f"{key}, read {r} times" for key, n, r in book.overlaps())
        print(f"[fresh] split {k}: {prepared.path}, test tracks read {seen[k]} times before"
              f"{overlap}", flush=True)
    return seen


def split_storages(args: argparse.Namespace, split_seed: int) -> list[Path]:
    """Each training seed's --storage for a split (its ledger is kept in each)."""
    return [Path(args.storage) / f"split_{split_seed}" / f"seed_{s}" for s in args.seeds]


def split_reads(folders: list[Path]) -> tuple[int, str]:
    """Every read of a split that its results folders know: the union of the ledger copies
    in their best.json (each read once, by its id). A folder written before the ledger was
    kept by content holds a count and its ledger's file (summary.md names it): each such
    ledger's largest count, summed over the ledgers (two seeds prepared under two cache keys
    kept two ledgers of one split)."""
    entries: dict[str, dict] = {}
    legacy: dict[str, int] = {}
    for folder in folders:
        best = json.loads((folder / "best.json").read_text())
        copy = best.get("test_ledger")
        if copy is not None:
            entries.update({e["id"]: e for e in copy["entries"]})
            continue
        m = re.search(r"ledger `([^`]+)`", (folder / "summary.md").read_text())
        path = m.group(1) if m else str(folder)
        legacy[path] = max(legacy.get(path, 0), int(best.get("test_reads") or 0))
    if legacy and entries:
        raise ValueError(f"{folders}: some results folders keep the ledger by content and "
                         f"some by cache folder; run the old ones again (--resume) to count "
                         f"their reads in one ledger")
    if legacy:
        return (sum(legacy.values()),
                f"the largest count of each of its {len(legacy)} old per-cache ledger(s), "
                f"summed, from the results folders")
    return len(entries), "the ledger's reads, from the copies in the results folders"


def shared_tracks(runs: list[SplitRun]) -> list[str]:
    """Pairs of splits whose test tracks overlap: a read of one is partly a read of the
    other."""
    out = []
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            n = len(set(a.split.tracks) & set(b.split.tracks))
            if n:
                out.append(f"- split seeds {a.split_seed} and {b.split_seed} share {n} of "
                           f"their {len(b.split.tracks)} test tracks")
    return out


def run_sweeps(args: argparse.Namespace) -> None:
    """Every (split, seed) sweep not yet finished, `--parallel` at a time, seed by seed (all
    splits of the first seed first: an interrupted call leaves whole seeds); each sweep's
    console to its log."""
    out = Path(args.out)
    todo = [(k, s) for s in args.seeds for k in args.splits
            if not (results_folder(out, k, s, args.smoke) / "best.json").exists()]
    running: list[tuple[tuple[int, int], subprocess.Popen, float]] = []
    failed: list[str] = []
    while todo or running:
        while todo and len(running) < args.parallel:
            k, s = todo.pop(0)
            argv = sweep_argv(k, s, args)
            log = out / f"split_{k}_seed_{s}.log"
            print(f"[fresh] split {k} seed {s}: {' '.join(argv[1:])} (console: {log})",
                  flush=True)
            with open(log, "a") as f:
                proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)
            running.append(((k, s), proc, time.perf_counter()))
        time.sleep(2)
        for item in list(running):
            (k, s), proc, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            took = (time.perf_counter() - t0) / 60
            print(f"[fresh] split {k} seed {s}: exit {proc.returncode} after {took:.1f} min",
                  flush=True)
            if proc.returncode != 0:
                failed.append(f"split {k} seed {s} (exit {proc.returncode}; see "
                              f"{out}/split_{k}_seed_{s}.log)")
    if failed:
        raise SystemExit(f"[fresh] failed: {', '.join(failed)}; the finished sweeps are kept, "
                         f"and a new call resumes the rest")


def load_split(folders: list[Path], split_seed: int) -> SplitRun:
    """A split's finished sweeps (one folder per training seed): their cells and test
    predictions, every cell checked to be tested on the same segments (a
    split drawn otherwise on another machine would fail here, not mix). A folder written
    before cells and trials took Ray's words reads the same, through `raygenre.load`."""
    split: Split | None = None
    stats: dict[str, list[TrackStats]] = {}
    val_acc: dict[str, list[float]] = {}
    tested, walls, partial = 0, [], []
    for folder in folders:
        res = raygenre.load(folder)
        cells = res.cells.to_dict("records")
        saved = read_test_predictions(folder / TEST_PREDICTIONS)
        missing = [c["cell_id"] for c in cells if c["cell_id"] not in saved]
        if missing:
            raise ValueError(f"{folder}: cells {missing} have no test predictions; the grid "
                             f"must test every cell (`test: every`)")
        if split is None:
            first = saved[cells[0]["cell_id"]]
            split = Split.of(first[1], first[2])
        for c in sorted(cells, key=lambda c: int(c["seed"])):
            probs, labels, tracks = saved[c["cell_id"]]
            if labels != list(split.labels) or \
                    tracks != [split.tracks[i] for i in split.track_of]:
                raise ValueError(f"{folder}: cell {c['cell_id']} was tested on other segments "
                                 f"than {folders[0]}'s cells")
            # Probabilities are stored to 6 significant digits: a tiny one reads as 0, and its
            # log (used by the loss only, not by accuracy or the vote) is clipped.
            logp = np.log(np.maximum(probs, 1e-30))
            stats.setdefault(c["variant"], []).append(track_stats(logp, split))
            val_acc.setdefault(c["variant"], []).append(float(c["best/val/acc"]))
        tested += len(cells)
        walls.append(float(res.best["wall_s"]))
        # A sweep resumed before walls were kept across commands (raygenre.sweep.clock) has the
        # last command's wall only: its training share is then unknown (None), or, written by
        # an older version, above 1, which no real share can be.
        share = res.best.get("training_share")
        partial.append(share is None or share > 1)
    assert split is not None, "no folders"
    reads, how = split_reads(folders)
    return SplitRun(split_seed, split, stats, val_acc, tested, reads, how, walls, partial)


def walls(run: SplitRun) -> str:
    text = ", ".join(f"{w / 60:.1f}" + "*" * p for w, p in zip(run.wall_s, run.wall_partial,
                                                                 strict=True)) + " min"
    if any(run.wall_partial):
        text += (" (* the last command of a resumed sweep only: the commands before it ran "
                 "before walls were kept)")
    return text


def compare(runs: list[SplitRun], reference: str = REFERENCE, n: int = DRAWS) -> list[dict]:
    """Per recipe: test accuracy (segments, tracks) with intervals, mean best val/acc, and
    how many times more errors than `reference` it makes, with the paired interval."""
    recipes = list(runs[0].stats)
    for run in runs:
        if list(run.stats) != recipes:
            raise ValueError(f"split {run.split_seed} ran recipes {list(run.stats)}, "
                             f"split {runs[0].split_seed} ran {recipes}")
    if reference not in recipes:
        raise ValueError(f"no recipe named {reference!r} among {recipes}")
    errors = {r: {s: errors_of([(run.split, SEED + run.split_seed, run.stats[r]) for run in runs],
                                s, n) for s in ("acc", "track_acc")} for r in recipes}
    rows = []
    for r in recipes:
        row: dict = {"recipe": r, "val/acc": float(np.mean([v for run in runs
                                                             for v in run.val_acc[r]]))}
        for s in ("acc", "track_acc"):
            row[f"test/{s}"] = accuracy_interval(errors[r][s])
            # The reference against itself: one set of models, a ratio of exactly 1.
            row[f"ratio/{s}"] = ((1.0, 1.0, 1.0) if r == reference else
                                 ratio_interval(errors[r][s], errors[reference][s]))
        rows.append(row)
    return rows


def per_sweep(runs: list[SplitRun], seeds: list[int]) -> list[str]:
    """Each recipe's test/acc (segment) on each split under each seed: the seed-to-seed spread
    that the pooled intervals fold in, shown as it is."""
    heads = [f"split {r.split_seed} seed {s}" for r in runs for s in seeds]
    out = ["| recipe | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for recipe in runs[0].stats:
        out.append(f"| {recipe} | " + " | ".join(f"{st.value('acc'):.3f}" for r in runs
                                                  for st in r.stats[recipe]) + " |")
    return out


def table(rows: list[dict]) -> list[str]:
    out = ["| recipe | best val/acc | test/acc (segment) | test/track_acc (vote) | "
           f"errors × {REFERENCE}'s (segment) | errors × {REFERENCE}'s (track) |",
           "|---|---:|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['recipe']} | {r['val/acc']:.3f} | {describe(*r['test/acc'])} | "
                   f"{describe(*r['test/track_acc'])} | {describe(*r['ratio/acc'])} | "
                   f"{describe(*r['ratio/track_acc'])} |")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="raygenre-fresh-splits",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--splits", default="1,2", help="split seeds (each a new split of the set)")
    ap.add_argument("--seeds", default="0", help="training seeds, each recipe under each")
    ap.add_argument("--data", default="builtin:music")
    ap.add_argument("--parallel", type=int, default=2, help="sweeps at once")
    ap.add_argument("--max-concurrent", type=int, default=1, help="trials at once per sweep")
    ap.add_argument("--cpus-per-trial", type=int, default=1)
    ap.add_argument("--out", default=str(Path("results") / "fresh_splits"))
    ap.add_argument("--storage", default=str(Path.home() / "raygenre_runs" / "fresh_splits"))
    ap.add_argument("--cache", help="the grid CLI's --cache")
    ap.add_argument("--smoke", action="store_true", help="the sweeps' --smoke (a test run)")
    ap.add_argument("--allow-read", action="store_true",
                    help="run on a split whose test tracks were read before (say so)")
    ap.add_argument("--report-only", action="store_true",
                    help="write the table from the finished splits; run nothing")
    args = ap.parse_args(argv)
    args.splits = [int(k) for k in args.splits.split(",")]
    args.seeds = seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    # --report-only writes nothing but the page: not even the derived grid file.
    reads_before = prepare_splits(None if args.report_only else seed_grid(out, seeds[0]), args)
    if not args.report_only:
        run_sweeps(args)
    runs = [load_split([results_folder(out, k, s, args.smoke) for s in seeds], k)
            for k in args.splits]
    rows = compare(runs)
    per_split = [f"- split seed {r.split_seed}: {len(r.split.tracks)} test tracks "
                 f"({len(r.split.labels)} segments); read {reads_before[r.split_seed]} times "
                 f"before its first sweep, {r.tested_here} by these sweeps' cells (one per "
                 f"cell), {r.reads} in all ({r.reads_how}); {len(r.wall_s)} sweep(s), wall "
                 f"{walls(r)}" for r in runs] + shared_tracks(runs)
    body = [f"`{GRID}`'s recipes on {len(runs)} split(s) drawn by seeds {args.splits} (data "
            f"`{args.data}`, cpu preset), training seeds {seeds}; each cell tested once at its "
            f"best val/acc epoch. Intervals: 95 % t intervals whose variance adds the test "
            f"tracks' (a bootstrap over each split's tracks, stratified by class, the same "
            f"draws for every recipe)"
            + (" and the training seeds' (each split's seed spread), at Satterthwaite's df; "
               "error ratios on the log scale (delta method)" if len(seeds) > 1 else
               "; one training seed, so seed-to-seed spread is not in them") + ".", "",
            *table(rows), "", "Each sweep's test/acc (segment):", "",
            *per_sweep(runs, seeds), "", *per_split]
    print("\n".join(body))
    figures: dict[str, float | str] = {}
    for r in rows:
        figures[f"{r['recipe']}_test_acc"] = round(r["test/acc"][0], 3)
        figures[f"{r['recipe']}_errors_ratio"] = round(r["ratio/acc"][0], 2)
    if args.smoke:  # a test of the tool: its figures are printed, not kept in results/bench
        print("\n".join(f"RESULT fresh_splits_smoke {k}={v}" for k, v in figures.items()))
        return
    write_page("fresh_splits", f"`{GRID}` on splits no search has read", body, figures,
               argv_command("raygenre-fresh-splits"))


if __name__ == "__main__":
    main()
