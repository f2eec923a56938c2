"""What raygenre costs over a plain PyTorch loop, for one trial.

The same trial (CNN1 on spectrograms, the CPU preset, batch 32, EPOCHS epochs, seed 0, the
built-in data, one torch thread as a trial gets on this machine) run two ways, each as a fresh
process from the command line:
  plain:    read the prepared split files into tensors, shuffle, train, validate each epoch;
  raygenre: `python -m raygenre.grid` on a one-cell grid (Ray start, Ray Data, Tune trial,
            the loop in it, a checkpoint per epoch, results, plots).
Reports the wall-time ratio, time to the first epoch and where raygenre's extra time goes.
That both loops learn the same is checked on validation (the last epoch's val/acc): the plain
loop does not read the test split, which only `report.evaluate` reads, each read entered in
the test ledger (raygenre.data.ledger); raygenre's own final test evaluation is entered there.

    python bench/overhead.py [--epochs 8] [--repeat 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, cnn1_grid, report, run_cli

T0 = time.perf_counter()  # the plain loop's clock starts with its process, as raygenre's does


def plain(epochs: int) -> None:
    """The plain loop, in this process: prints one line per epoch and a JSON summary."""
    import torch

    from raygenre.config import PRESETS, Config
    from raygenre.data import synth
    from raygenre.data.prepared import read_split, to_tensor
    from raygenre.data.sets import prepare
    from raygenre.paths import default_cache
    from raygenre.training.builder import Runtime, build_training
    from raygenre.training.loop import run_epoch, train_epoch

    torch.set_num_threads(1)
    cfg = Config().replace(**PRESETS["cpu"], model="cnn1", features="spectrogram",
                           epochs=epochs, batch_size=32)
    cache = default_cache()
    prepared = prepare(synth.ensure_builtin(cache),
                       cache, cfg, log=lambda s: None)
    data = {}
    for split in ("train", "val"):  # not test: see the module's docstring
        t = read_split(prepared, split)
        data[split] = (to_tensor(t.column("x")), torch.tensor(t.column("label").to_numpy()))
    # The loop's own set-up and passes: the plain loop lacks only Ray, the seam and checkpoints.
    training = build_training(cfg, Runtime(len(prepared.genres), prepared.segment_samples),
                              "cpu")

    def batches(split: str, size: int, seed: int | None = None):
        x, y = data[split]
        order = (torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
                 if seed is not None else torch.arange(len(y)))
        for i in range(0, len(y), size):
            idx = order[i:i + size]
            yield {"x": x[idx], "label": y[idx]}

    train_s = 0.0
    for epoch in range(1, epochs + 1):
        t = time.perf_counter()
        loss, acc = train_epoch(training, batches("train", cfg.batch_size, epoch))
        _, val_acc = run_epoch(training.judged, training.feats, batches("val", 128), "cpu")
        train_s += time.perf_counter() - t
        print(f"plain epoch {epoch}/{epochs} val/acc {val_acc:.3f} "
              f"at {time.perf_counter() - T0:.1f}s", flush=True)
    print(json.dumps({"train_s": train_s, "val_acc": val_acc}), flush=True)


def run_plain(epochs: int) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--plain", "--epochs", str(epochs)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    first, summary = None, {}
    assert proc.stdout is not None
    for line in proc.stdout:
        print(f"  {time.perf_counter() - t0:7.1f}s | {line}", end="", flush=True)
        if first is None and "epoch 1/" in line:
            first = time.perf_counter() - t0
        if line.startswith("{"):
            summary = json.loads(line)
    if proc.wait() != 0:
        raise RuntimeError("the plain loop failed")
    return {"wall_s": time.perf_counter() - t0, "first_epoch_s": first, **summary}


def run_raygenre(epochs: int, tmp: Path) -> dict:
    grid = cnn1_grid(tmp, "overhead", "bench/overhead.py - one CNN1 trial, every epoch run",
                     epochs, [0])
    run = run_cli([str(grid), "--preset", "cpu", "--storage", str(tmp / "runs"),
                   "--results", str(tmp / "results")])
    folder = tmp / "results" / "overhead"
    best = json.loads((folder / "best.json").read_text())
    (cell,) = list(csv.DictReader(open(folder / "cells.csv")))
    planned = run.first("[grid] TensorBoard")
    fit_start = run.first("in Ray's object store")
    first_epoch = run.first("epoch 1/")
    last_epoch = run.first(f"epoch {epochs}/")
    return {"wall_s": run.wall_s, "first_epoch_s": first_epoch,
            "ray_up_s": run.first("[ray] dashboard"), "planned_s": planned,
            "before_fit_s": fit_start,
            "fit_s": best["wall_s"], "trial_s": float(cell["wall_s"]),
            "train_s": float(cell["train_s"]), "last_epoch_s": last_epoch,
            "val_acc": last_val_acc(folder / "history.csv", epochs)}


def last_val_acc(history: Path, epochs: int) -> float:
    """The one trial's val/acc after its last epoch (what the plain loop prints)."""
    rows = [r for r in csv.DictReader(open(history)) if int(r["epoch"]) == epochs]
    if len(rows) != 1:
        raise RuntimeError(f"{history}: {len(rows)} rows for epoch {epochs}, expected one")
    return float(rows[0]["val/acc"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2,
                    help="runs of each, alternating; the fastest of each is compared")
    ap.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain:
        return plain(args.epochs)
    plains, rays = [], []
    for i in range(args.repeat):  # alternating, so a slow spell of the machine hits both
        print(f"[{i + 1}/{args.repeat}] plain PyTorch loop, {args.epochs} epochs")
        plains.append(run_plain(args.epochs))
        with tempfile.TemporaryDirectory(prefix="bench_overhead_") as d:
            print(f"[{i + 1}/{args.repeat}] raygenre, the same trial, {args.epochs} epochs")
            rays.append(run_raygenre(args.epochs, Path(d)))
    p = min(plains, key=lambda run: run["wall_s"])
    r = min(rays, key=lambda run: run["wall_s"])
    def walls(runs: list[dict]) -> str:
        return ", ".join(f"{x['wall_s']:.1f}" for x in runs)

    walls_line = f"whole-command walls, plain: {walls(plains)} s; raygenre: {walls(rays)} s"
    per_epoch_p, per_epoch_r = p["train_s"] / args.epochs, r["train_s"] / args.epochs
    # Everything but the epochs: what raygenre adds once per command. Per-epoch speed swings
    # +-10% between runs here, so the ratio is also given with the plain run's epochs on both
    # sides: the whole-command ratio a run of equal epoch speed would show.
    fixed_p, fixed_r = p["wall_s"] - p["train_s"], r["wall_s"] - r["train_s"]
    equal_epochs = (p["wall_s"] + fixed_r - fixed_p) / p["wall_s"]
    body = [
        f"One trial: CNN1 on spectrograms, CPU preset, batch 32, {args.epochs} epochs, seed 0, "
        "built-in data (960 train segments), one torch thread. Both runs start as a fresh "
        f"process; times in seconds from that start. Each ran {args.repeat} times, alternating; "
        f"the table compares the fastest run of each ({walls_line}).", "",
        "| | plain PyTorch | raygenre | ratio |", "|---|---:|---:|---:|",
        f"| whole command | {p['wall_s']:.1f} | {r['wall_s']:.1f} | "
        f"{r['wall_s'] / p['wall_s']:.2f} |",
        f"| to the end of epoch 1 | {p['first_epoch_s']:.1f} | {r['first_epoch_s']:.1f} | "
        f"{r['first_epoch_s'] / p['first_epoch_s']:.2f} |",
        f"| training + validation, per epoch | {per_epoch_p:.2f} | {per_epoch_r:.2f} | "
        f"{per_epoch_r / per_epoch_p:.2f} |",
        f"| everything but the epochs | {fixed_p:.1f} | {fixed_r:.1f} | "
        f"+{fixed_r - fixed_p:.1f} s |",
        f"| whole command at the plain run's epoch speed | {p['wall_s']:.1f} | "
        f"{p['wall_s'] + fixed_r - fixed_p:.1f} | {equal_epochs:.2f} |",
        f"| val/acc after the last epoch | {p['val_acc']:.3f} | {r['val_acc']:.3f} | |", "",
        "Where raygenre's time goes (seconds from the command's start):", "",
        f"- Ray up, dashboard URL printed: {r['ray_up_s']:.1f}",
        f"- data checked, grid planned: {r['planned_s']:.1f}",
        f"- train and val splits in the object store, `Tuner.fit` starts: "
        f"{r['before_fit_s']:.1f}",
        f"- trial start (its process, the first batches) + epoch 1: "
        f"{r['first_epoch_s'] - r['before_fit_s']:.1f}, of which epoch 1 "
        f"~{per_epoch_r:.1f}",
        f"- last epoch reported: {r['last_epoch_s']:.1f}",
        f"- `Tuner.fit` in all: {r['fit_s']:.1f} (Tune's trial time {r['trial_s']:.1f})",
        f"- results (test evaluation, tables, plots) and shutdown: "
        f"{r['wall_s'] - r['before_fit_s'] - r['fit_s']:.1f}",
    ]
    # The sweep cost of one more trial: Tuner.fit's share, against the plain loop's whole run.
    report("overhead", "Overhead: raygenre against a plain PyTorch loop, one trial", body, {
        "overhead_ratio": f"{r['wall_s'] / p['wall_s']:.2f}",
        "trial_overhead_ratio": f"{r['fit_s'] / p['wall_s']:.2f}",
        "epoch_overhead_ratio": f"{per_epoch_r / per_epoch_p:.2f}",
        "overhead_ratio_equal_epochs": f"{equal_epochs:.2f}",
        "fixed_extra_s": f"{fixed_r - fixed_p:.1f}",
        "first_epoch_plain_s": f"{p['first_epoch_s']:.1f}",
        "first_epoch_raygenre_s": f"{r['first_epoch_s']:.1f}",
    })


if __name__ == "__main__":
    sys.exit(main())
