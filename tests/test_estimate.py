"""The cost estimate printed before the first trial."""

from __future__ import annotations

from pathlib import Path

from raygenre.data.prepared import Prepared
from raygenre.grid.file import load_grid
from raygenre.grid.resolved import resolve
from raygenre.sweep.estimate import cheaper, estimate
from raygenre.sweep.plan import Node, plan_resources

# The built-in set's shape: 960/120/120 five-second segments, 10 genres (no files are read).
BUILTIN = Prepared(Path("."), tuple(f"g{i}" for i in range(10)), 110_250,
                   {"train": 960, "val": 120, "test": 120}, True)


def test_the_estimate_counts_trials_and_scales_with_the_input() -> None:
    grid = load_grid("batch_epoch")
    plan = plan_resources([Node(2)], 6)
    cpu = estimate(resolve(grid, "cpu", None).plans, BUILTIN, plan)
    assert cpu is not None and cpu.trial_epochs == 60  # 6 trials of 10 epochs, not 24 cells
    assert list(cpu.samples_per_s) == ["cnn1 on spectrogram n_fft 126 hop 1024"]
    study = estimate(resolve(grid, "study", None).plans[:1], BUILTIN, plan)
    assert study.trial_epochs == 10
    # The study's 201x552 input costs CNN1 many times the CPU preset's, per epoch.
    assert study.minutes / 10 > 5 * cpu.minutes / 60
    assert "at most 60 trial-epochs" in cpu.describe(2, asha=True)
    assert "--preset cpu" in cheaper("study", plan) and "--smoke" in cheaper("cpu", plan)


def test_no_estimate_for_gpu_trials_without_a_gpu_here() -> None:
    grid = load_grid("cnn")
    plans = resolve(grid, "cpu", None).plans
    plan = plan_resources([Node(8, 1)], 2)
    import torch

    assert (estimate(plans, BUILTIN, plan) is None) == \
        (not torch.cuda.is_available())
