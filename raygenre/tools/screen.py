"""Screen a grid's variants across seeds on one machine without Ray: every cell runs the same
`train_loop` through `LocalSeam`, several processes at once (a GPU takes many small cells at a
time), and is tested at its best val/acc epoch as the report does. Prints one line per cell
and a table of means per variant; writes the rows to OUT/screen.jsonl as they finish, so a run
cut short keeps what it measured.

For a first look where the sweep would take hours (on a 2-core CPU, an 80-epoch small_cnn
trial on real music took 45-86 min, two at a time; a GPU runs a dozen at once in ~5 min). Its
numbers are not the sweep's: LocalSeam draws its own batch order, and a GPU's arithmetic is
not a CPU's. A finding is confirmed with the sweep itself.

    raygenre-screen GRID [--data builtin:music] [--variants a,b] [--seeds 0,1,2] [--procs N]
                    [--preset cpu] [--epochs N] [--deadline S] [--cache DIR] [--out DIR]
    (or python -m raygenre.tools.screen ...)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from raygenre.data.prepared import Prepared, read_split, to_tensor
from raygenre.data.sets import prepare
from raygenre.grid.file import load_grid
from raygenre.grid.objective import best_epoch
from raygenre.grid.resolved import resolve
from raygenre.sweep.inputs import data_root, runtime_facts
from raygenre.training.builder import Runtime


def _split(prepared: Prepared, split: str, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    table = read_split(prepared, split)
    return (to_tensor(table.column("x")).to(device),
            torch.tensor(table.column("label").to_pylist()).to(device))


def _cell(job: dict[str, Any]) -> dict[str, Any]:
    """One cell in a worker process: train, then score the best epoch's checkpoint on the
    validation split's tracks, and on the test split only where the screen was told to."""
    from raygenre.report.evaluate import evaluate
    from raygenre.training.loop import LocalSeam, train_loop

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    prepared, device, folder = job["prepared"], job["device"], Path(job["folder"])
    data = {s: _split(prepared, s, device) for s in ("train", "val")}
    seam = LocalSeam(data, folder, device=device)
    train_loop(job["config"], job["runtime"], seam)
    best = best_epoch(seam.reports, *job["objective"])
    checkpoint = folder / f"epoch_{best['epoch']:04d}"
    val = evaluate(checkpoint, prepared, "val", device)
    test = (evaluate(checkpoint, prepared, "test", device, reader=job["show_test"])
            if job["show_test"] else {})
    shutil.rmtree(folder, ignore_errors=True)
    return {"variant": job["variant"], "seed": job["seed"], "best_epoch": best["epoch"],
            "val/acc": best["val/acc"], "val/track_acc": val["val/track_acc"],
            "last/val/acc": seam.reports[-1]["val/acc"],
            "last/train/acc": seam.reports[-1]["train/acc"],
            "last/train/loss": seam.reports[-1]["train/loss"],
            **{k: test[k] for k in ("test/acc", "test/track_acc") if k in test},
            "wall_s": time.perf_counter() - t0,
            "val_history": [r["val/acc"] for r in seam.reports]}


def _mean_std(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 \
        else f"{xs[0]:.3f}"


def _run(jobs: list[dict[str, Any]], args: argparse.Namespace, out: Path,
         t_start: float) -> list[dict[str, Any]]:
    """Every job in `args.procs` processes; each row to OUT/screen.jsonl as it finishes."""
    rows: list[dict[str, Any]] = []
    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    with ctx.Pool(args.procs) as pool, open(out / "screen.jsonl", "a") as f:
        pending = [pool.apply_async(_cell, (j,)) for j in jobs]
        while pending:
            if time.perf_counter() - t_start > args.deadline:
                print(f"[screen] deadline: {len(pending)} cell(s) dropped", flush=True)
                pool.terminate()
                break
            done = [r for r in pending if r.ready()]
            for r in done:
                pending.remove(r)
                row = r.get()  # a cell's error stops the screen, with its traceback
                rows.append(row)
                f.write(json.dumps(row) + "\n")
                f.flush()
                test = (f" test {row['test/acc']:.3f} track {row['test/track_acc']:.3f}"
                        if args.show_test else "")
                print(f"[screen] {row['variant']} seed {row['seed']}: val {row['val/acc']:.3f} "
                      f"track {row['val/track_acc']:.3f} (epoch {row['best_epoch']}){test} in "
                      f"{row['wall_s']:.0f} s", flush=True)
            time.sleep(0.5)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="raygenre-screen", description=__doc__.split("\n\n")[0])
    p.add_argument("grid")
    p.add_argument("--data", default="builtin:music")
    p.add_argument("--variants", help="comma-separated variant names (default: all)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--procs", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--preset", default="cpu", help="as the sweep's --preset (default cpu, "
                   "so a GPU screen has the CPU runs' input sizes)")
    p.add_argument("--epochs", type=int, help="override every cell's epochs (a smoke run)")
    p.add_argument("--deadline", type=float, default=float("inf"),
                   help="seconds after which unfinished cells are dropped")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "raygenre"))
    p.add_argument("--out", default="results/screen")
    p.add_argument("--show-test", action="store_true",
                   help="also score each cell on the test split and print it; every read is "
                        "entered in the set's test ledger (a screen decides on validation, so "
                        "leave this off while searching)")
    args = p.parse_args(argv)
    t_start = time.perf_counter()

    grid = load_grid(args.grid)
    wanted = args.variants.split(",") if args.variants else None
    if wanted:
        missing = set(wanted) - {v["name"] for v in grid.variants}
        if missing:
            raise SystemExit(f"{args.grid}: no variant(s) {sorted(missing)}")
    # The grid narrowed to the chosen variants, crossed with the chosen seeds: the sweep's own
    # helpers then give the cells' configs and the band statistics they normalise with.
    seeds = [int(s) for s in args.seeds.split(",")]
    grid = dataclasses.replace(
        grid, axes={**grid.axes, "seed": seeds},
        variants=tuple(v for v in grid.variants if wanted is None or v["name"] in wanted))
    sweep = resolve(grid, args.preset, None)
    cache = Path(args.cache)
    prepared = prepare(data_root(args.data, cache), cache, sweep.base)
    configs = [(cell.variant, cfg.seed,
                cfg.replace(epochs=args.epochs) if args.epochs else cfg)
               for cell, cfg in sweep.cells]
    runtime = runtime_facts(sweep, prepared, threads=1)
    print(f"[screen] data and band statistics ready at {time.perf_counter() - t_start:.0f} s; "
          f"{len(configs)} cells, {args.procs} at a time", flush=True)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"screen{os.getpid()}"
    # Longest first, so the short ones fill the gaps at the end.
    jobs = sorted(({"variant": v, "seed": s, "config": c, "runtime": Runtime(**runtime),
                    "prepared": prepared, "device": device,
                    "objective": (grid.metric, grid.mode), "folder": str(work / f"{v}_s{s}"),
                    "show_test": (f"raygenre-screen --show-test ({args.grid}, variant {v}, "
                                  f"seed {s})" if args.show_test else "")}
                   for v, s, c in configs), key=lambda j: -j["config"].epochs)
    rows = _run(jobs, args, out, t_start)
    shutil.rmtree(work, ignore_errors=True)

    print(f"\n{device} ({torch.cuda.get_device_name(0) if device == 'cuda' else 'CPU'}), "
          f"{len(rows)} cells in {time.perf_counter() - t_start:.0f} s\n")
    cols = ["val/acc", "val/track_acc"] + (["test/acc", "test/track_acc"] if args.show_test
                                           else [])
    print(f"| variant | seeds | {' | '.join(cols)} |\n|---|---|{'---|' * len(cols)}")
    for v in dict.fromkeys(v for v, _, _ in configs):
        mine = sorted((r for r in rows if r["variant"] == v), key=lambda r: r["seed"])
        if mine:
            print(f"| {v} | {','.join(str(r['seed']) for r in mine)} | "
                  + " | ".join(_mean_std([r[c] for r in mine]) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
