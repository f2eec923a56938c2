"""How trials use the cluster: how many run at once and how big each is, from the nodes.

A trial is sized on one node shape, never from the cluster's totals: a trial asking for a GPU and
the CPUs of three machines fits on none of them and waits forever. With GPUs, a trial takes the
CPUs that go with its share of a GPU on the largest GPU node (g5.xlarge: 4 CPUs per GPU, so a
quarter GPU comes with one CPU). Without GPUs, one core per trial on small machines: conv
training scales sub-linearly in threads, so side-by-side trials use cores better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from raygenre.config import ConfigError

# A data-parallel trial's own process only waits on its Train workers, but must hold some CPU
# (0 raises). Kept tiny and taken out of a worker's share: with 0.1, two such processes on one
# 1-CPU node left 0.8 there, a 0.9 worker fit nowhere and the sweep waited forever (seen).
DRIVER_CPU = 0.01

# Trials per GPU when --gpus-per-trial is not given: one per PACK_CPUS of the CPUs that go with
# a GPU, at most MAX_PER_GPU, and no more than the trials need. A one-process trial kept an H200
# busy only 10-18% of the time (its input feed and per-epoch work are CPU-side): with 16 CPUs
# per GPU, four trials at once ran 2.25x the trials/hour of one, two 1.62x
# (results/bench/gpu.md). A g5.xlarge's 4 CPUs per GPU still give one trial per GPU.
PACK_CPUS = 4
MAX_PER_GPU = 4


@dataclass(frozen=True)
class Node:
    """One node shape: its CPUs and GPUs, and how many such nodes there are (or may be)."""

    cpus: float
    gpus: float = 0.0
    count: int = 1


@dataclass(frozen=True)
class Plan:
    """How trials run: printed at start so the user sees what runs in parallel and why."""

    concurrency: int
    workers: int  # 1: the loop runs in the Tune trial; N > 1: N Ray Train workers (DDP)
    worker_cpus: float  # per worker (for one worker: the whole trial)
    worker_gpus: float
    threads: int  # torch threads per worker

    @property
    def use_gpu(self) -> bool:
        return self.worker_gpus > 0

    @property
    def data_parallel(self) -> bool:
        return self.workers > 1

    def waits_for_gpus(self, alive: list[Node]) -> bool:
        """Whether GPU trials must wait for GPU nodes an autoscaler has yet to add."""
        return self.use_gpu and not any(n.gpus for n in alive)

    def trial_resources(self) -> dict[str, float]:
        """What the Tune trial itself holds: everything when it runs the loop; next to nothing
        when Train workers do."""
        if self.data_parallel:
            return {"cpu": DRIVER_CPU}
        return {"cpu": self.worker_cpus, **({"gpu": self.worker_gpus} if self.use_gpu else {})}

    def worker_resources(self) -> dict[str, float]:
        """Each Train worker's resources (data-parallel trials)."""
        return {"CPU": self.worker_cpus, **({"GPU": self.worker_gpus} if self.use_gpu else {})}

    def describe(self) -> str:
        kind = f"{self.worker_gpus:g} GPU, " if self.use_gpu else ""
        each = (f"one process ({self.worker_cpus:g} CPU, {kind}{self.threads} torch thread(s))"
                if not self.data_parallel else
                f"{self.workers} Ray Train workers, DDP, each {self.worker_cpus:g} CPU, {kind}"
                f"{self.threads} torch thread(s)")
        return f"{self.concurrency} trial(s) at once, each {each}"


def _default_gpu_share(shape: Node, gpu_nodes: list[Node], n_trials: int) -> float:
    """A one-process trial's GPU share on node `shape` when none is asked for (PACK_CPUS)."""
    per_gpu = min(MAX_PER_GPU, max(1, math.floor(shape.cpus / shape.gpus / PACK_CPUS)))
    gpus = sum(n.gpus * n.count for n in gpu_nodes)
    return 1 / max(1, min(per_gpu, math.ceil(n_trials / gpus)))


def plan_resources(nodes: list[Node], n_trials: int, workers: int = 1,
                   cpus_per_trial: float | None = None, gpus_per_trial: float | None = None,
                   max_concurrent: int | None = None) -> Plan:
    """Size trials on the largest suitable node shape and count how many fit at once.

    `cpus_per_trial` / `gpus_per_trial` are a trial's totals (split evenly over its workers);
    `gpus_per_trial` 0 forces CPU trials, a fraction packs several trials on one GPU.
    """
    if workers < 1:
        raise ConfigError(f"--workers-per-trial must be at least 1, got {workers}")
    if not nodes:
        raise ConfigError("the cluster reports no alive node")
    gpu_nodes = [n for n in nodes if n.gpus > 0]
    want_gpu = bool(gpus_per_trial) or (gpus_per_trial is None and bool(gpu_nodes))
    if want_gpu:
        # Trials are sized on the largest GPU node.
        shape = max(gpu_nodes, key=lambda n: (n.gpus, n.cpus)) if gpu_nodes else None
        if gpus_per_trial is None and workers == 1 and shape is not None:
            gpus_per_trial = _default_gpu_share(shape, gpu_nodes, n_trials)
        gw = (gpus_per_trial or workers) / workers
        if workers > 1 and (gw < 1 or gw != int(gw)):
            raise ConfigError(f"--gpus-per-trial {gpus_per_trial:g} with {workers} workers per "
                              f"trial: each data-parallel worker needs whole GPUs (NCCL cannot "
                              f"share one between ranks); use {workers}, {2 * workers}, ...")
        if shape is not None:
            cpg = shape.cpus / shape.gpus
            cw = (cpus_per_trial / workers if cpus_per_trial
                  else float(math.floor(cpg * gw)) if cpg * gw >= 1 else cpg * gw)
            slots = sum(n.count * min(math.floor(n.gpus / gw + 1e-9),
                                      math.floor(n.cpus / cw + 1e-9)) for n in gpu_nodes)
            fits = slots // workers
            if fits == 0:
                raise ConfigError(
                    f"no node fits a trial of {workers} worker(s) with {cw:g} CPU and {gw:g} "
                    f"GPU each (largest GPU node: {shape.cpus:g} CPU, {shape.gpus:g} GPU); "
                    f"lower --cpus-per-trial or --gpus-per-trial")
        else:
            # No GPU node yet, but asked for: an autoscaling cluster may start with none. Trials
            # wait for the GPU nodes their requests make the autoscaler add.
            cw = cpus_per_trial / workers if cpus_per_trial else 1.0
            fits = n_trials
    else:
        gw = 0.0
        largest = max(n.cpus for n in nodes)
        cw = cpus_per_trial / workers if cpus_per_trial else (1.0 if largest <= 4 else 2.0)
        fits = sum(n.count * math.floor(n.cpus / cw + 1e-9) for n in nodes) // workers
        if fits == 0:
            raise ConfigError(f"no node has {cw:g} CPUs for a trial's worker (largest: "
                              f"{largest:g}); lower --cpus-per-trial")
    if workers > 1:
        cw -= DRIVER_CPU  # the trial's own process shares the first worker's node
    concurrency = max(1, min(fits, n_trials, max_concurrent or n_trials))
    return Plan(concurrency, workers, cw, gw, max(1, math.floor(cw + DRIVER_CPU)))


def nodes_from_ray(ray_nodes: list[dict[str, Any]]) -> list[Node]:
    """Alive nodes' shapes from `ray.nodes()`."""
    return [Node(n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0))
            for n in ray_nodes if n.get("Alive")]


def nodes_from_autoscaler(config: dict[str, Any]) -> list[Node] | None:
    """What a `ray up` cluster can grow to: the head, and each worker type at its max_workers;
    None when its node types do not declare their resources (on-prem machines, or a cloud file
    that leaves them to the autoscaler): trials are then sized from the nodes alive."""
    out = []
    head = config.get("head_node_type")
    for name, spec in (config.get("available_node_types") or {}).items():
        res = spec.get("resources") or {}
        if "CPU" not in res:
            return None
        count = 1 if name == head else int(spec.get("max_workers", 0))
        if count:
            out.append(Node(float(res["CPU"]), float(res.get("GPU", 0)), count))
    return out or None
