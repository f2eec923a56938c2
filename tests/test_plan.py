"""Trials are sized per node shape, never from the cluster's totals."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config

from raygenre.config import ConfigError
from raygenre.sweep.plan import (
    DRIVER_CPU,
    Node,
    nodes_from_autoscaler,
    nodes_from_ray,
    plan_resources,
)

ROOT = Path(__file__).resolve().parent.parent


def test_a_small_cpu_machine_runs_one_single_process_trial_per_core() -> None:
    p = plan_resources([Node(2)], 24)
    assert (p.concurrency, p.workers, p.worker_cpus, p.threads, p.use_gpu) == (2, 1, 1.0, 1, False)
    assert p.trial_resources() == {"cpu": 1.0}  # the trial is the worker: nothing held twice
    assert plan_resources([Node(16)], 3).concurrency == 3  # capped at the trial count
    big = plan_resources([Node(16)], 24)
    assert (big.concurrency, big.worker_cpus, big.threads) == (8, 2.0, 2)


def test_cluster_yaml_sizes_a_trial_for_one_g5_node_not_the_whole_cluster() -> None:
    """The bug this replaces: 8 + 6x4 CPUs over 6 GPUs gave 5.3 CPUs per trial with 1 GPU,
    which no g5.xlarge (4 CPUs) holds: the sweep waited forever."""
    config = prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    nodes = nodes_from_autoscaler(config)
    assert sorted((n.cpus, n.gpus, n.count) for n in nodes) == [(4, 1, 2), (4, 1, 4), (8, 0, 1)]
    p = plan_resources(nodes, 24)
    assert (p.worker_cpus, p.worker_gpus, p.concurrency, p.threads) == (4.0, 1.0, 6, 4)
    assert p.trial_resources() == {"cpu": 4.0, "gpu": 1.0}
    quarter = plan_resources(nodes, 24, gpus_per_trial=0.25)
    assert (quarter.worker_cpus, quarter.worker_gpus, quarter.concurrency) == (1.0, 0.25, 24)
    cpu_only = plan_resources(nodes, 24, gpus_per_trial=0)
    assert not cpu_only.use_gpu and cpu_only.worker_cpus == 2.0


@pytest.mark.parametrize("nodes, gpus, want", [
    # (cpus, gpus, count) per shape -> (cpus per trial, gpus per trial, trials at once)
    ([(8, 0, 1), (16, 4, 1)], None, (4.0, 1.0, 4)),  # CPU head + a 4-GPU box: 4 CPUs per GPU
    ([(8, 0, 1), (16, 4, 1)], 0.5, (2.0, 0.5, 8)),
    ([(32, 8, 2), (4, 1, 3)], None, (4.0, 1.0, 19)),  # largest GPU node sets the shape;
    # the small nodes still hold one trial each
    ([(6, 1, 1)], 0.25, (1.0, 0.25, 4)),  # 1.5 CPUs per quarter GPU, rounded down to whole
    ([(2, 4, 1)], 1, (0.5, 1.0, 4)),  # fewer CPUs than GPUs: a fraction of a CPU each
])
def test_mixed_node_shapes(nodes: list, gpus: float | None, want: tuple) -> None:
    p = plan_resources([Node(*n) for n in nodes], 100, gpus_per_trial=gpus)
    assert (p.worker_cpus, p.worker_gpus, p.concurrency) == want
    # Every trial fits on at least one node shape.
    assert any(n[0] >= p.worker_cpus and n[1] >= p.worker_gpus for n in nodes)


def test_gpus_asked_for_before_the_autoscaler_adds_them() -> None:
    """A cluster whose node types are unknown starts with a CPU head only: GPU trials are
    planned anyway and wait for GPU nodes; without the option, it runs CPU trials."""
    p = plan_resources([Node(8)], 24, gpus_per_trial=0.5, max_concurrent=6)
    assert p.use_gpu and p.worker_gpus == 0.5 and p.concurrency == 6
    assert not plan_resources([Node(8)], 24).use_gpu
    assert not plan_resources([Node(8, 4)], 24, gpus_per_trial=0).use_gpu


def test_data_parallel_trials_fit_their_driver_beside_a_worker() -> None:
    """Two Train workers on a 2-core machine: the trial's own process takes its sliver from
    the first worker's share, or the second worker would never be placed."""
    p = plan_resources([Node(2)], 4, workers=2, cpus_per_trial=2)
    assert p.data_parallel and p.concurrency == 1
    assert p.trial_resources()["cpu"] + 2 * p.worker_resources()["CPU"] <= 2.0
    # Two 1-CPU nodes: the driver and one worker share a node.
    q = plan_resources([Node(1), Node(1)], 4, workers=2)
    assert DRIVER_CPU + q.worker_resources()["CPU"] <= 1.0 and q.threads == 1
    g = plan_resources([Node(8, 4)], 4, workers=2)
    assert g.worker_resources() == {"CPU": 2.0 - DRIVER_CPU, "GPU": 1.0} and g.concurrency == 2


def test_impossible_requests_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="whole GPUs"):
        plan_resources([Node(8, 4)], 4, workers=2, gpus_per_trial=1)
    with pytest.raises(ConfigError, match="no node has 8 CPUs"):
        plan_resources([Node(4), Node(4)], 4, cpus_per_trial=8)
    with pytest.raises(ConfigError, match="no node fits a trial"):
        plan_resources([Node(4, 1)], 4, gpus_per_trial=2)


def test_nodes_from_ray_and_undeclared_node_types() -> None:
    alive = [{"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0}},
             {"Alive": False, "Resources": {"CPU": 64.0}},
             {"Alive": True, "Resources": {"CPU": 8.0}}]
    assert nodes_from_ray(alive) == [Node(4.0, 1.0), Node(8.0, 0.0)]
    onprem = prepare_config(yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text()))
    assert nodes_from_autoscaler(onprem) is None  # machines are fixed: size from the alive


@pytest.mark.parametrize("nodes, trials, want", [
    # (cpus, gpus, count) per shape, trials -> (cpus per trial, gpus per trial, trials at once)
    ([(16, 1, 1)], 100, (4.0, 0.25, 4)),  # the measured H200 machine: four per GPU
    ([(16, 1, 1)], 2, (8.0, 0.5, 2)),  # fewer trials than slots: each gets more of the GPU
    ([(16, 1, 1)], 1, (16.0, 1.0, 1)),  # one trial: the whole GPU and its CPUs
    ([(96, 8, 1)], 100, (4.0, 1 / 3, 24)),  # 12 CPUs per GPU: three per GPU
    ([(4, 1, 6), (8, 0, 1)], 100, (4.0, 1.0, 6)),  # g5.xlarge: 4 CPUs per GPU, one per GPU
    ([(128, 1, 1)], 100, (32.0, 0.25, 4)),  # many CPUs: at most four per GPU
])
def test_gpu_trials_are_packed_by_the_cpus_that_go_with_a_gpu(nodes: list, trials: int,
                                                               want: tuple) -> None:
    p = plan_resources([Node(*n) for n in nodes], trials)
    assert (p.worker_cpus, p.worker_gpus, p.concurrency) == pytest.approx(want)
    # Asked for, a share is kept as given; data-parallel workers keep whole GPUs.
    assert plan_resources([Node(*n) for n in nodes], trials, gpus_per_trial=1).worker_gpus == 1
    if sum(n[1] * n[2] for n in nodes) >= 2:
        assert plan_resources([Node(*n) for n in nodes], trials, workers=2).worker_gpus == 1
