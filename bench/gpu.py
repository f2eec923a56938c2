"""GPU figures: the loop's samples/s and the GPU's utilisation per model and arithmetic, whether
the same seed gives the same numbers there, the best number of trials per GPU, and the `all`
pipeline's wall at the study preset. Writes results/bench/gpu.md.

Sections (each adds its figures to a state file and rewrites gpu.md, so a run cut short keeps
what it measured, and a later run can add the remaining sections):
- loop: `run_epoch` (the loop's own epoch: features on the device, model, optimiser) on random
  5-s waveforms moved batch by batch from CPU tensors, as a trial gets them; one warm-up epoch,
  then the fastest of two timed epochs. No Ray.
- determinism: `train_loop` twice with the same seed through `LocalSeam` on the GPU; every
  reported metric and every weight compared bit for bit. No Ray.
- packing: one grid of equal CNN1 trials (study preset) run through the CLI with each
  `--gpus-per-trial` fraction; `Tuner.fit` wall, trials/hour and utilisation.
- all: `python -m raygenre.grid all --preset study` with the best fraction, the whole command.

    python bench/gpu.py [--sections loop,determinism,packing,all] [--state FILE]
                        [--fractions 1,0.5,0.25,0.125] [--deadline S] [--smoke]

`--smoke` runs every section small on whatever device there is (a CPU with fraction 0): the
way to check this script without a GPU.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from _common import cnn1_grid, machine, report, run_cli

STUDY_SAMPLES = 110_250  # 5 s at 22 050 Hz


class Utilisation:
    """`nvidia-smi` sampled every 100 ms in a thread: GPU busy % and memory used (MiB)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Utilisation:
        try:
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                 "--format=csv,noheader,nounits", "-lms", "100"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except FileNotFoundError:  # no GPU here (--smoke on a CPU)
            return self
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                util, mem = (float(v) for v in line.split(",")[:2])
            except ValueError:
                continue
            self.samples.append((util, mem))

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()

    def mean(self) -> float:
        return statistics.fmean(u for u, _ in self.samples) if self.samples else float("nan")

    def peak_mem(self) -> float:
        return max((m for _, m in self.samples), default=float("nan"))


# --- loop ------------------------------------------------------------------------------------

LOOP_VARIANTS = [  # (label, config deltas over the study preset, batch size)
    ("CNN1, fp32 (deterministic, the default)", {}, 32),
    ("CNN1, tf32", {"tf32": True}, 32),
    ("CNN1, bf16 autocast", {"precision": "bf16"}, 32),
    ("CNN1, bf16 + tf32", {"precision": "bf16", "tf32": True}, 32),
    ("CNN1, fp32, batch 128", {}, 128),
    ("CNN1, bf16 + tf32, batch 128", {"precision": "bf16", "tf32": True}, 128),
    ("CNN2, fp32", {"model": "cnn2"}, 32),
    ("small_cnn (best's recipe: log-mel, SpecAugment, mixup), fp32",
     {"model": "small_cnn", "features": "logmel", "band_norm": True, "spec_augment": True,
      "mixup": 0.2, "scheduler": "cosine", "lr": 0.003, "weight_decay": 0.0001}, 32),
    ("MLP on waveforms (64x64), fp32", {"model": "mlp", "features": "waveform"}, 32),
    ("CNN1, CPU preset (64x108), fp32", {"n_fft": 126, "hop_length": 1024}, 32),
]


def loop_section(state: dict, smoke: bool) -> None:
    import torch

    from raygenre.config import Config
    from raygenre.data.features import band_stats, feature_key
    from raygenre.training.builder import Runtime, build_training
    from raygenre.training.loop import LocalSeam, train_epoch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n = 64 if smoke else 960  # the built-in set's train split
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, STUDY_SAMPLES, generator=gen) * 0.1
    y = torch.randint(0, 10, (n,), generator=gen)
    seam = LocalSeam({"train": (x, y)}, Path(tempfile.gettempdir()))  # its batches, in order
    rows = []
    variants = LOOP_VARIANTS[:2] if smoke else LOOP_VARIANTS
    for label, deltas, batch in variants:
        if smoke:
            deltas = {**deltas, "n_fft": 126, "hop_length": 1024}
        cfg = Config().replace(**deltas, batch_size=batch)
        stats = ({feature_key(cfg): band_stats(
            cfg.replace(band_norm=False), (x[i:i + 64] for i in range(0, n, 64)))}
            if cfg.band_norm else {})
        # The loop's own set-up and training pass (what a trial runs), timed.
        training = build_training(cfg, Runtime(10, STUDY_SAMPLES, band_stats=stats), device)

        times = []
        with Utilisation() as util:
            for i in range(3):  # the first is warm-up: cuDNN's kernels, the allocator
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                train_epoch(training, seam.batches("train", batch, None))
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i:
                    times.append(time.perf_counter() - t0)
        weights = sum(p.numel() for p in training.model.parameters())
        mem = (torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda"
               else float("nan"))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        rows.append({"label": label, "batch": batch, "weights": weights,
                     "samples_s": n / min(times), "util": util.mean(), "mem_gib": mem})
        print(f"[loop] {label}: {n / min(times):.0f} samples/s, util {util.mean():.0f}%",
              flush=True)
    state["loop"] = {"device": str(device), "samples": n, "rows": rows}


# --- determinism -----------------------------------------------------------------------------

def determinism_section(state: dict, smoke: bool) -> None:
    import torch

    from raygenre.config import Config
    from raygenre.training.builder import Runtime
    from raygenre.training.loop import LocalSeam, train_loop

    device = "cuda" if torch.cuda.is_available() else "cpu"
    n = 64 if smoke else 320
    gen = torch.Generator().manual_seed(1)
    data = {s: (torch.randn(k, STUDY_SAMPLES, generator=gen) * 0.1,
                torch.randint(0, 10, (k,), generator=gen))
            for s, k in (("train", n), ("val", n // 4))}
    out = []
    for label, deltas in (("CNN1 fp32 (defaults)", {}),
                          ("small_cnn fp32, SpecAugment + mixup",
                           {"model": "small_cnn", "features": "logmel", "spec_augment": True,
                            "mixup": 0.2}),
                          ("CNN1 bf16 + tf32", {"precision": "bf16", "tf32": True})):
        runs = []
        for _ in range(2):
            with tempfile.TemporaryDirectory() as d:
                cfg = Config(model="cnn1", features="spectrogram", epochs=2, batch_size=32,
                             seed=0).replace(**deltas)
                if smoke:
                    cfg = cfg.replace(n_fft=126, hop_length=1024)
                seam = LocalSeam(data, Path(d), device=device)
                train_loop(cfg, Runtime(10, STUDY_SAMPLES), seam)
                state_dict = torch.load(Path(d) / "epoch_0002" / "state.pt",
                                        map_location="cpu", weights_only=True)["model"]
                runs.append(([{k: v for k, v in r.items() if k not in ("epoch_s", "train_s")}
                              for r in seam.reports], state_dict))
        (m1, w1), (m2, w2) = runs
        same_metrics = m1 == m2
        same_weights = all(torch.equal(w1[k], w2[k]) for k in w1)
        out.append({"label": label, "same_metrics": same_metrics,
                    "same_weights": same_weights,
                    "val_acc": [r["val/acc"] for r in m1], "val_loss": [r["val/loss"] for r in m1]})
        print(f"[determinism] {label}: metrics identical {same_metrics}, "
              f"weights identical {same_weights}", flush=True)
    state["determinism"] = {"device": device, "rows": out}


# --- packing and all: the CLI --------------------------------------------------------------------

def cli(args: list[str], timeout_s: float, log: Path) -> dict:
    """The CLI as a user runs it (`run_cli`), with GPU utilisation sampled and its output
    logged; past `timeout_s` it gets Ctrl-C, so it stops cleanly."""
    with Utilisation() as util, open(log, "a") as f:
        f.write(f"$ python -m raygenre.grid {' '.join(args)}\n")
        t0 = time.perf_counter()
        run = run_cli(args, check=False, interrupt_after_s=timeout_s,
                      on_line=lambda _, line: f.write(
                          f"{time.perf_counter() - t0:7.1f}s | {line}"))
    return {"rc": run.rc, "wall_s": run.wall_s, "util": util.mean(),
            "peak_mem_mib": util.peak_mem(), "lines": [line for _, line in run.lines]}


def packing_section(state: dict, args: argparse.Namespace, tmp: Path, log: Path) -> None:
    trials, epochs = (2, 1) if args.smoke else (args.trials, args.epochs)
    grid = cnn1_grid(tmp, "gpu_packing", "bench/gpu.py - equal CNN1 trials", epochs,
                     list(range(trials)))
    preset = "cpu" if args.smoke else "study"
    rows = state.setdefault("packing", {"trials": trials, "epochs": epochs, "rows": []})["rows"]
    for fraction in args.fractions:
        out = tmp / f"pack_{fraction:g}"
        run = cli([str(grid), "--preset", preset, "--gpus-per-trial", f"{fraction:g}",
                   "--storage", str(out / "runs"), "--results", str(out / "results"), "--fresh"],
                  args.deadline - time.perf_counter(), log)
        if run["rc"] != 0:
            rows.append({"fraction": fraction, "error": "\n".join(run["lines"][-15:])})
            print(f"[packing] {fraction:g}: exited {run['rc']}", flush=True)
            break
        best = json.loads((out / "results" / grid.stem / "best.json").read_text())
        with open(out / "results" / grid.stem / "history.csv") as f:
            history = {f"seed {r['seed']} epoch {r['epoch']}": [r["train/loss"], r["val/loss"]]
                       for r in csv.DictReader(f)}
        plan = next((ln for ln in run["lines"] if "trial(s) at once" in ln), "")
        rows.append({"fraction": fraction, "fit_s": best["wall_s"], "wall_s": run["wall_s"],
                     "util": run["util"], "peak_mem_mib": run["peak_mem_mib"],
                     "plan": plan.split(";", 1)[-1].strip(),
                     "trials_per_hour": trials * 3600 / best["wall_s"],
                     "test_acc": best["test/acc"], "history": history})
        print(f"[packing] {fraction:g}: fit {best['wall_s']:.1f} s", flush=True)
        write(state, args)


def all_section(state: dict, args: argparse.Namespace, tmp: Path, log: Path) -> None:
    done = [r for r in state.get("packing", {}).get("rows", []) if "fit_s" in r]
    fraction = (max(done, key=lambda r: r["trials_per_hour"])["fraction"] if done
                else args.fractions[0])
    extra = ["--smoke", "--preset", "cpu", "--stages", "baseline,cnn"] if args.smoke else [
        "--preset", "study"]
    out = tmp / "all"
    run = cli(["all", *extra, "--gpus-per-trial", f"{fraction:g}", "--storage",
               str(out / "runs"), "--results", str(out / "results"), "--fresh"],
              args.deadline - time.perf_counter(), log)
    found = glob.glob(str(out / "results" / "pipeline*.md"))
    # Stages that finished, also when the command was stopped before writing pipeline.md.
    stages = {Path(p).parent.name: json.loads(Path(p).read_text()).get("wall_s")
              for p in glob.glob(str(out / "results" / "all*" / "*" / "best.json"))}
    state["all"] = {"fraction": fraction, "rc": run["rc"], "wall_s": run["wall_s"],
                    "util": run["util"], "peak_mem_mib": run["peak_mem_mib"],
                    "pipeline_md": Path(found[0]).read_text() if found else "",
                    "stages_done": stages, "tail": run["lines"][-12:]}


# --- the report ------------------------------------------------------------------------------

def write(state: dict, args: argparse.Namespace) -> None:
    Path(args.state).write_text(json.dumps(state, indent=1))
    body, figures = [], {}
    loop = state.get("loop")
    if loop:
        body += [f"## The loop's samples/s ({loop['device']})", "",
                 f"`run_epoch` on {loop['samples']} random 5-s waveforms (the built-in train "
                 "split's size), batches moved from CPU tensors as a trial gets them; the "
                 "fastest of two epochs after one warm-up epoch. Study preset (201x552) unless "
                 "named.", "",
                 "| model, arithmetic | batch | weights | samples/s | GPU busy % | peak GPU "
                 "memory GiB |", "|---|---:|---:|---:|---:|---:|"]
        for r in loop["rows"]:
            body.append(f"| {r['label']} | {r['batch']} | {r['weights'] / 1e6:.2f} M | "
                        f"{r['samples_s']:.0f} | {r['util']:.0f} | {r['mem_gib']:.2f} |")
        body.append("")
        figures["cnn1_study_fp32_samples_per_s"] = f"{loop['rows'][0]['samples_s']:.0f}"
        figures["cnn1_study_fp32_gpu_busy_pct"] = f"{loop['rows'][0]['util']:.0f}"
    det = state.get("determinism")
    if det:
        body += [f"## Same seed twice ({det['device']})", "",
                 "`train_loop` through `LocalSeam`, 2 epochs, seed 0, twice in one process; "
                 "every reported metric and every weight of the last checkpoint compared.", "",
                 "| run | metrics identical | weights identical | val/acc by epoch |",
                 "|---|---|---|---|"]
        for r in det["rows"]:
            body.append(f"| {r['label']} | {r['same_metrics']} | {r['same_weights']} | "
                        f"{', '.join(f'{v:.4f}' for v in r['val_acc'])} |")
        body.append("")
        figures["same_seed_same_numbers_fp32"] = str(det["rows"][0]["same_metrics"]
                                                     and det["rows"][0]["same_weights"])
    pack = state.get("packing")
    if pack and pack["rows"]:
        body += ["## Trials per GPU", "",
                 f"{pack['trials']} equal trials (CNN1, study preset, batch 32, "
                 f"{pack['epochs']} epochs, seeds 0-{pack['trials'] - 1}) on the built-in data, "
                 "every trial in full, with each `--gpus-per-trial`; `Tuner.fit` wall.", "",
                 "| --gpus-per-trial | plan | sweep s | trials/hour | GPU busy % (whole "
                 "command) | peak GPU memory MiB |", "|---:|---|---:|---:|---:|---:|"]
        for r in pack["rows"]:
            if "error" in r:
                body.append(f"| {r['fraction']:g} | failed: see the log | | | | |")
                continue
            body.append(f"| {r['fraction']:g} | {r['plan']} | {r['fit_s']:.1f} | "
                        f"{r['trials_per_hour']:.0f} | {r['util']:.0f} | "
                        f"{r['peak_mem_mib']:.0f} |")
        body += ["", *pack.get("notes", []), ""]
        ok = [r for r in pack["rows"] if "fit_s" in r]
        with_history = [r for r in ok if r.get("history")]
        if len(with_history) > 1:
            same = all(r["history"] == with_history[0]["history"]
                       and r["test_acc"] == with_history[0]["test_acc"] for r in with_history)
            body += [f"Every cell's train/loss and val/loss at every epoch, and the best "
                     f"cell's test/acc, compared across the {len(with_history)} sweeps "
                     f"(full precision, history.csv): {'identical' if same else 'DIFFERENT'}.",
                     ""]
            figures["same_numbers_at_every_packing"] = str(same)
        if ok:
            best = max(ok, key=lambda r: r["trials_per_hour"])
            figures["best_gpus_per_trial"] = f"{best['fraction']:g}"
            figures["trials_per_gpu_hour"] = f"{best['trials_per_hour']:.0f}"
            base = next((r for r in ok if r["fraction"] == 1), None)
            if base:
                figures["packing_speedup_over_one_per_gpu"] = (
                    f"{base['fit_s'] / best['fit_s']:.2f}")
    a = state.get("all")
    if a:
        status = "finished" if a["rc"] == 0 else f"stopped (exit {a['rc']})"
        body += ["## The `all` pipeline at the study preset", "",
                 f"`python -m raygenre.grid all --preset study --gpus-per-trial "
                 f"{a['fraction']:g}`, cold Ray, built-in data already generated: "
                 f"{status} after {a['wall_s'] / 60:.1f} min; GPU busy {a['util']:.0f}% "
                 f"over the command, peak GPU memory {a['peak_mem_mib']:.0f} MiB.", ""]
        if a["pipeline_md"]:  # its links and plot stayed on the machine that ran it
            table = [re.sub(r"\[([^]]*)\]\([^)]*\)", r"\1", ln)
                     for ln in a["pipeline_md"].splitlines()[2:] if not ln.startswith("![")]
            body += ["Its pipeline.md:", "", *table]
        if a["rc"] != 0:
            body += ["Stages finished before it stopped (wall s): " + (", ".join(
                f"{k} {v:.0f}" for k, v in a["stages_done"].items()) or "none"), ""]
            body += ["Its last lines:", "", "```", *a["tail"], "```", ""]
        if a["rc"] == 0:
            figures["all_pipeline_study_wall_min"] = f"{a['wall_s'] / 60:.1f}"
    report("gpu", "GPU: samples/s, utilisation, trials per GPU, the all pipeline", body,
           figures, command="; ".join(state.get("commands", [])),
           machine_line=state.get("machine"), date=state.get("date"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sections", default="loop,determinism,packing,all")
    ap.add_argument("--state", default=str(Path(tempfile.gettempdir()) / "raygenre_gpu.json"))
    ap.add_argument("--fractions", default="1,0.5,0.25,0.125")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--deadline", type=float, default=3600, help="seconds for the whole run")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    args.fractions = [float(f) for f in args.fractions.split(",")]
    args.deadline = time.perf_counter() + args.deadline
    state = json.loads(Path(args.state).read_text()) if os.path.exists(args.state) else {}
    if args.sections:  # an empty list only rewrites gpu.md from the state file
        state["machine"], state["date"] = machine(), f"{datetime.now():%Y-%m-%d %H:%M}"
        state.setdefault("commands", []).append(f"python bench/gpu.py {' '.join(sys.argv[1:])}")
    log = Path(args.state).with_suffix(".log")
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as d:
        for section in filter(None, args.sections.split(",")):
            t0 = time.perf_counter()
            if section == "loop":
                loop_section(state, args.smoke)
            elif section == "determinism":
                determinism_section(state, args.smoke)
            elif section == "packing":
                state.pop("packing", None)
                packing_section(state, args, Path(d), log)
            elif section == "all":
                all_section(state, args, Path(d), log)
            else:
                raise SystemExit(f"unknown section {section!r}")
            print(f"[gpu] {section} took {time.perf_counter() - t0:.0f} s", flush=True)
            write(state, args)
    write(state, args)


if __name__ == "__main__":
    sys.exit(main())
