"""cluster.yaml's node types on this machine: Ray's `fake_multinode` provider, whose autoscaler
(v1) starts each "node" as a raylet of its own here, with no cloud and no SSH.

The cluster runs in its own PID and mount namespace (`unshare`, as root): `ray stop` and a dead
head touch only its processes, and killing the namespace's first process ends every one of
them, nodes the autoscaler added included. Its ports are its own (free ones), so other Ray
instances on the machine are left alone. See ../shared/RAY_NOTES.md, "Cluster launcher on one
machine".
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

# The fake provider names its head node type so (FAKE_HEAD_NODE_TYPE in
# ray/autoscaler/_private/fake_multi_node/node_provider.py) and starts no other head type.
FAKE_HEAD_TYPE = "ray.head.default"
FAKE_HEAD_NODE_ID = "f" * 51 + "00000"

# Scaled to this 2-core machine: every fake node is a raylet and its workers here, and a trial
# holds one CPU, so each node type gets one CPU whatever it declares (GPUs are only numbers to
# the scheduler and stay as declared). At most two worker nodes of a type and three in all: two
# trials at once, and a replacement while a killed node is still counted (Ray's autoscaler v1
# keeps a node its provider lists until it has missed heartbeats for
# AUTOSCALER_HEARTBEAT_TIMEOUT_S, 30 s: autoscaler.py, terminate_unhealthy_nodes).
NODE_CPUS = 1
MAX_PER_TYPE = 2
MAX_WORKERS = 3
# Each node's object store: the smoke data is a few MB; Ray's default (30% of RAM per node)
# would let four nodes claim most of this shared machine's /dev/shm.
OBJECT_STORE_BYTES = 200 * 1024 * 1024


def scaled_node_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`config`'s node types, resources scaled to this machine and the head type renamed to
    the fake provider's. Names, GPU counts and custom resources are kept."""
    head = config["head_node_type"]
    out = {}
    for name, spec in config["available_node_types"].items():
        res = {k: v for k, v in (spec.get("resources") or {}).items() if k != "CPU"}
        res = {"CPU": NODE_CPUS, **res, "object_store_memory": OBJECT_STORE_BYTES}
        if name == head:
            out[FAKE_HEAD_TYPE] = {"resources": res, "node_config": {}, "max_workers": 0}
        else:
            # None at start whatever the file says: the trials' requests must bring them.
            out[name] = {"resources": res, "node_config": {}, "min_workers": 0,
                         "max_workers": min(int(spec.get("max_workers", 0)), MAX_PER_TYPE)}
    return out


def fake_config(config: dict[str, Any], gcs_address: str) -> dict[str, Any]:
    """The autoscaling config for `ray start --head --autoscaling-config`: `config`'s cluster
    settings and node types on the fake provider, with nothing to install or run on a node."""
    return {
        "cluster_name": config.get("cluster_name", "raygenre") + "-fake",
        "max_workers": min(int(config.get("max_workers", MAX_WORKERS)), MAX_WORKERS),
        "upscaling_speed": config.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": config.get("idle_timeout_minutes", 5),
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True,
                     "gcs_address": gcs_address},
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": scaled_node_types(config),
        "head_node_type": FAKE_HEAD_TYPE,
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def free_port() -> int:
    """A free port outside Ray's worker port range (10002-19999), which Ray refuses for its
    own servers."""
    while True:
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        if not 10002 <= port <= 19999:
            return port


@dataclass
class FakeCluster:
    """A running fake cluster: its GCS address, the environment a driver needs to join it,
    and the namespace's first process (killing it ends the cluster)."""

    address: str
    env: dict[str, str]
    init: subprocess.Popen
    log: Path
    tmp: Path  # RAY_TMPDIR: its session folder, the driver's staging folder included
    dashboard: str  # its dashboard's URL, where Ray's state API (ray.util.state) answers

    def processes(self) -> list[psutil.Process]:
        """Every process of the cluster (the namespace's, from outside it)."""
        try:
            return psutil.Process(self.init.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def host_process(self, ns_pid: int) -> psutil.Process:
        """The process that the cluster's processes (a trial reporting its pid) know as
        `ns_pid`: inside the namespace pids are its own (the NSpid line of /proc/PID/status
        lists a process's pid in each namespace, outermost first)."""
        for p in self.processes():
            try:
                status = Path(f"/proc/{p.pid}/status").read_text()
            except OSError:
                continue
            nspid = next(line.split()[1:] for line in status.splitlines()
                         if line.startswith("NSpid:"))
            if int(nspid[-1]) == ns_pid:
                return p
        raise AssertionError(f"no process of the fake cluster has pid {ns_pid} in it")

    def worker_raylets(self) -> list[psutil.Process]:
        """The raylets of the nodes the autoscaler added (not the head's)."""
        return list(self.worker_nodes().values())

    def worker_nodes(self) -> dict[str, psutil.Process]:
        """{Ray node id: raylet} of the nodes the autoscaler added and alive now. The fake
        provider gives each node it launches a new id (RAY_OVERRIDE_NODE_ID_FOR_TESTING in its
        raylet's environment, ...00001, ...00002 in launch order; node_provider.py), the id Ray
        and its state API know it by."""
        out = {}
        for p in self.processes():
            try:
                # The head's raylet carries the fake head id; each added node its own.
                node_id = p.environ().get("RAY_OVERRIDE_NODE_ID_FOR_TESTING")
                if p.name() == "raylet" and node_id not in (None, FAKE_HEAD_NODE_ID):
                    out[node_id] = p
            except psutil.NoSuchProcess:
                pass
        return out

    def state(self) -> tuple[dict[str, Any], dict[int, Any]]:
        """What Ray's public state API says now: every node it has known, dead ones included
        ({node id: NodeState}, with start_time_ms and end_time_ms), and every Tune function
        trial process it has known ({pid in the cluster: ActorState}, with node_id). Asked of
        the dashboard over HTTP: this process need not join the cluster."""
        from ray.util.state import list_actors, list_nodes

        nodes = {n.node_id: n for n in list_nodes(address=self.dashboard, detail=True,
                                                  limit=1000)}
        actors = {a.pid: a for a in list_actors(address=self.dashboard, detail=True,
                                                limit=10000)
                  if a.class_name == "ImplicitFunc" and a.pid}
        return nodes, actors

    def stop(self) -> None:
        """Kill the namespace's first process (unshare's child): the kernel then kills every
        process in it. Killing `unshare` alone would orphan the namespace, hence --kill-child
        too, for a test process that dies before its teardown."""
        procs = self.processes()
        for p in psutil.Process(self.init.pid).children() if self.init.poll() is None else []:
            p.kill()
        if self.init.poll() is None:
            try:
                self.init.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.init.kill()
                self.init.wait(timeout=30)
        _, alive = psutil.wait_procs(procs, timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if alive:
            raise RuntimeError(f"the fake cluster left processes behind: {alive}")


def ray_exe() -> str:
    return shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"


def start(workdir: Path, cluster_yaml: Path, env: dict[str, str],
          timeout: float = 180) -> FakeCluster:
    """Start the head (no worker) from `cluster_yaml`'s node types and wait until it answers.

    `workdir` becomes the cluster's (and its drivers') HOME: the autoscaling config lands at
    ~/ray_bootstrap_config.yaml, where `ray up` leaves it on a head and where raygenre reads
    the node types a sweep is sized for. `env` reaches every process of the cluster."""
    ip = "127.0.0.1"
    port = free_port()
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    config = fake_config(yaml.safe_load(cluster_yaml.read_text()), f"{ip}:{port}")
    bootstrap = home / "ray_bootstrap_config.yaml"
    bootstrap.write_text(yaml.safe_dump(config, sort_keys=False))
    head = config["available_node_types"][FAKE_HEAD_TYPE]["resources"]
    custom = {k: v for k, v in head.items()
              if k not in ("CPU", "GPU", "object_store_memory")}
    # Ray's session folders, this cluster's own; short, for its sockets' paths (107 bytes).
    tmp = Path(tempfile.mkdtemp(prefix="rgfc-", dir="/tmp"))
    dashboard_port = free_port()
    cluster_env = {
        **env, "HOME": str(home), "RAY_TMPDIR": str(tmp),
        "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        # No token authentication: this HOME has no token, and the driver shares it.
        "RAY_AUTH_MODE": "disabled",
        # A node that stops answering is declared dead in a few seconds, not Ray's ~45 s
        # (a refused connection fails a check at once; a slow one has 5 s).
        "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "5000",
        "RAY_health_check_failure_threshold": "3",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [ray_exe(), "start", "--head", "--block", f"--node-ip-address={ip}",
           f"--port={port}", f"--autoscaling-config={bootstrap}",
           f"--num-cpus={head['CPU']:g}", f"--num-gpus={head.get('GPU', 0):g}",
           f"--object-store-memory={OBJECT_STORE_BYTES}",
           f"--dashboard-host={ip}", f"--dashboard-port={dashboard_port}",
           f"--dashboard-agent-listen-port={free_port()}",
           f"--dashboard-agent-grpc-port={free_port()}",
           f"--ray-client-server-port={free_port()}",
           f"--runtime-env-agent-port={free_port()}",
           f"--metrics-export-port={free_port()}",
           f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
           "--min-worker-port=0", "--max-worker-port=0"]
    if custom:
        cmd.append(f"--resources={json.dumps(custom)}")
    log = workdir / "head.log"
    init = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", *cmd],
                            env=cluster_env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    cluster = FakeCluster(f"{ip}:{port}", {**env, "HOME": str(home), "RAY_TMPDIR": str(tmp),
                                           "RAY_AUTH_MODE": "disabled"}, init, log, tmp,
                          f"http://{ip}:{dashboard_port}")
    deadline = time.time() + timeout
    while "Ray runtime started" not in log.read_text():
        if init.poll() is not None or time.time() > deadline:
            cluster.stop()
            raise RuntimeError(f"the fake cluster's head did not start: {log.read_text()[-3000:]}")
        time.sleep(0.5)
    return cluster


def kill_node_of(cluster: FakeCluster, ns_pid: int) -> str:
    """SIGKILL the raylet of the node running the process the cluster knows as `ns_pid`, and
    every process it started (its workers and agents) at once: the node is gone, as a
    reclaimed spot instance is. Returns the node's Ray id."""
    raylet: psutil.Process | None = cluster.host_process(ns_pid)
    while raylet is not None and raylet.name() != "raylet":
        raylet = raylet.parent()
    if raylet is None:
        raise AssertionError(f"process {ns_pid} runs on no raylet of the fake cluster")
    node_id = next((n for n, p in cluster.worker_nodes().items() if p == raylet), None)
    assert node_id is not None, "the trial runs on the head, not a worker node"
    victims = [raylet, *raylet.children(recursive=True)]
    for p in victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=30)
    return node_id
