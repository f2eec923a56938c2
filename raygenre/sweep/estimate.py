"""Before the first trial: what the sweep will cost here, from a few timed batches of each
distinct model, so a user learns that a sweep takes hours before it has taken them."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from raygenre.config import Config
from raygenre.data.prepared import Prepared
from raygenre.grid.resolved import TrialPlan
from raygenre.sweep.plan import Plan
from raygenre.training.builder import Runtime, build
from raygenre.training.optim import build_optimizer

TIMED_BATCH = 8  # small: at the study's 201x552 a CNN1 batch of 32 takes seconds on a CPU
LONG_MIN = 60.0  # beyond this, say so and name the cheaper ways


@dataclass(frozen=True)
class Estimate:
    trial_epochs: int
    minutes: float
    samples_per_s: dict[str, float]  # per distinct model and input, training
    epoch_s: tuple[float, ...]  # each trial's seconds per epoch here, in the trials' order

    def describe(self, concurrency: int, asha: bool) -> str:
        speeds = ", ".join(f"{k} {v:.0f}" for k, v in self.samples_per_s.items())
        bound = "at most " if asha else ""
        return (f"estimate: {bound}{self.trial_epochs} trial-epochs, about {self.minutes:.0f} min "
                f"here with {concurrency} at a time (training samples/s per trial, timed on "
                f"{TIMED_BATCH}-example batches: {speeds})")


def _key(cfg: Config) -> str:
    """Names what sets a trial's speed: model, input and its resolution."""
    shape = {
        "waveform": "waveform",
        "spectrogram": f"spectrogram n_fft {cfg.n_fft} hop {cfg.hop_length}",
        "logmel": f"logmel {cfg.n_mels} bands n_fft {cfg.mel_n_fft} hop {cfg.hop_length}",
        "semitone": f"semitone {cfg.semitone_bins} bands n_fft {cfg.semitone_n_fft} "
                    f"hop {cfg.hop_length}",
    }.get(cfg.features, cfg.features)
    width = {"small_cnn": f" {list(cfg.cnn_channels)}", "mlp": f" {list(cfg.hidden)}"}
    return f"{cfg.model}{width.get(cfg.model, '')} on {shape}"


@torch.no_grad()
def _forward_rate(feats: torch.nn.Module, model: torch.nn.Module, x: torch.Tensor) -> float:
    model.eval()
    t0 = time.perf_counter()
    model(feats(x))
    return len(x) / (time.perf_counter() - t0)


def _train_rate(cfg: Config, prepared: Prepared, device: torch.device) -> tuple[float, float]:
    """(training, evaluation) samples/s of this config's model on random segments."""
    runtime = Runtime(len(prepared.genres), prepared.segment_samples)
    feats, model = build(cfg.replace(band_norm=False), runtime)
    feats, model = feats.to(device), model.to(device)
    opt = build_optimizer(model.parameters(), cfg)
    x = torch.randn(TIMED_BATCH, prepared.segment_samples, device=device)
    y = torch.randint(0, len(prepared.genres), (TIMED_BATCH,), device=device)
    times = []
    for _ in range(3):  # the first is warm-up (allocations, kernel choice)
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(feats(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return TIMED_BATCH / min(times[1:]), _forward_rate(feats, model, x)


def estimate(plans: tuple[TrialPlan, ...], prepared: Prepared, plan: Plan) -> Estimate | None:
    """Time each distinct model here and add the trials up; None where this machine cannot
    stand in for the trials' (GPU trials, and no GPU in this process)."""
    device = torch.device("cuda" if plan.use_gpu and torch.cuda.is_available() else "cpu")
    if plan.use_gpu and device.type == "cpu":
        return None
    threads = torch.get_num_threads()
    torch.set_num_threads(plan.threads)
    try:
        rates: dict[str, tuple[float, float]] = {}
        seconds = 0.0
        trial_epochs = 0
        epoch_s = []
        for trial in plans:
            cfg = trial.config
            key = _key(cfg)
            if key not in rates:
                rates[key] = _train_rate(cfg, prepared, device)
            train, evaluate = rates[key]
            # Each of a data-parallel trial's workers trains on its share of the split.
            per_epoch = (prepared.counts["train"] / plan.workers / train
                         + prepared.counts["val"] / evaluate)
            seconds += cfg.epochs * per_epoch
            trial_epochs += cfg.epochs
            epoch_s.append(per_epoch)
    finally:
        torch.set_num_threads(threads)
        if device.type == "cuda":  # the timed models' memory, cached here, is the trials' now
            torch.cuda.empty_cache()
    return Estimate(trial_epochs, seconds / plan.concurrency / 60,
                    {k: v[0] for k, v in rates.items()}, tuple(epoch_s))


def cheaper(preset: str, plan: Plan) -> str:
    """What to do when the estimate is long here."""
    ways = []
    if preset == "study" and not plan.use_gpu:
        ways.append("--preset cpu (the same layers on a 64x108 spectrogram, ~20x cheaper)")
    if not plan.use_gpu:
        ways.append("a GPU (a machine or cluster with one: --address)")
    ways.append("--smoke first, to check the setup in a minute")
    return "; ".join(ways)
