"""GPU trials on a cluster whose GPU nodes are not there yet, or not real: the note that trials
wait for the autoscaler, and where a one-process trial trains when Ray gave it a GPU that
torch cannot see (an error, unless the sweep allows the CPU: Ray's fake GPU nodes,
tests/test_autoscaler.py)."""

from __future__ import annotations

import pytest
import torch

from raygenre.sweep.cluster import CPU_FOR_MISSING_GPU
from raygenre.sweep.plan import Node, plan_resources
from raygenre.sweep.runners import trial_device


def test_gpu_trials_wait_for_gpu_nodes_only_while_none_is_alive() -> None:
    """Sized for what the cluster can grow to (a GPU node type), judged on what is alive."""
    plan = plan_resources([Node(8), Node(4, 1, count=4)], n_trials=2)
    assert plan.use_gpu
    assert plan.waits_for_gpus([Node(8)])
    assert not plan.waits_for_gpus([Node(8), Node(4, 1)])
    assert not plan_resources([Node(8)], n_trials=2).waits_for_gpus([Node(8)])


def test_a_cpu_trial_trains_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert trial_device("t1", use_gpu=False) == torch.device("cpu")


def test_a_visible_gpu_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv(CPU_FOR_MISSING_GPU, "1")
    assert trial_device("t1", use_gpu=True) == torch.device("cuda", 0)


def test_a_missing_gpu_fails_the_trial_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(CPU_FOR_MISSING_GPU, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(RuntimeError, match=rf"trial t1 .*CUDA_VISIBLE_DEVICES=0.*"
                                           rf"{CPU_FOR_MISSING_GPU}=1"):
        trial_device("t1", use_gpu=True)


def test_a_missing_gpu_trains_on_the_cpu_when_allowed_and_says_so(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(CPU_FOR_MISSING_GPU, "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert trial_device("t1", use_gpu=True) == torch.device("cpu")
    err = capsys.readouterr().err
    assert "[trial t1] given a GPU by Ray (CUDA_VISIBLE_DEVICES=0) but torch sees none: " \
           "training on the CPU" in err


def test_the_sweep_passes_the_permission_to_its_trials_and_says_so(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """start_ray hands the variable to every trial through the job's runtime_env (a trial's
    environment is its node's, not the driver's)."""
    import ray

    from raygenre.sweep import cluster

    seen: dict = {}

    def fake_init(**kwargs):  # noqa: ANN003, ANN202
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setenv(CPU_FOR_MISSING_GPU, "1")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(RuntimeError, match="stop here"):
        cluster.start_ray(None)
    assert seen["runtime_env"]["env_vars"][CPU_FOR_MISSING_GPU] == "1"
    assert f"[ray] {CPU_FOR_MISSING_GPU}=1: a trial given a GPU" in capsys.readouterr().out
    monkeypatch.delenv(CPU_FOR_MISSING_GPU)
    with pytest.raises(RuntimeError, match="stop here"):
        cluster.start_ray(None)
    assert CPU_FOR_MISSING_GPU not in seen["runtime_env"]["env_vars"]
