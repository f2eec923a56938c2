"""Starting or joining Ray, what the cluster is made of, and where its run folder may live."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from pathlib import Path

import yaml

from raygenre.config import ConfigError
from raygenre.storage import Location, StorageError, check_shared
from raygenre.sweep import ray_private
from raygenre.sweep.plan import Node, nodes_from_autoscaler, nodes_from_ray

# `ray up` leaves the cluster's config on the head: its autoscaler may add machines.
AUTOSCALER_CONFIG = Path("~/ray_bootstrap_config.yaml").expanduser()

# Ray's fixed default ports, which `ray start` documents: the GCS (--port), the dashboard
# (--dashboard-port) and the dashboard agent (--dashboard-agent-listen-port). Written out, not
# read from Ray's private constants; tests/test_ray_private.py checks them against those.
RAY_DEFAULT_PORTS = frozenset({6379, 8265, 52365})

# Set to 1 where a sweep starts, it lets trials that Ray gives a GPU torch cannot see train on
# the CPU instead of failing (runners.trial_device): for Ray's fake multi-node provider, whose
# GPU nodes are numbers only (tests/test_autoscaler.py). The sweep passes it to every trial.
CPU_FOR_MISSING_GPU = "RAYGENRE_CPU_FOR_MISSING_GPU"


def joined_address(address: str | None) -> str | None:
    """The Ray address this sweep joins (--address, else RAY_ADDRESS), or None: its own."""
    return address or os.environ.get("RAY_ADDRESS") or None


def ray_running() -> bool:
    """Whether this process is already connected to Ray (a notebook's own `ray.init()`);
    asked without importing Ray, which a process that never used it has not loaded."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def start_ray(address: str | None) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), or start a Ray instance of our own.
    A process already connected (a notebook that called `ray.init()`) keeps its Ray: only the
    data settings the sweep's numbers depend on are applied to it."""
    import ray
    import ray.data

    if ray.is_initialized():
        print("[ray] using the Ray this process already started (its address and resources "
              "stand; --address is not used)")
        _set_data_context()
        return
    for noisy in ("ray.data", "ray.train", "ray.tune"):  # our progress lines say what matters
        logging.getLogger(noisy).setLevel(logging.WARNING)
    runtime_env = None
    # Without --address (or RAY_ADDRESS) a sweep starts its own Ray instance, even if another
    # runs on this machine: Ray would otherwise join the last one `ray start` (or a test
    # cluster) made, and a sweep could land on, and die with, somebody else's instance.
    joined = joined_address(address)
    if joined and not address:
        print(f"[ray] joining RAY_ADDRESS={joined} (unset it to run on a Ray of its own)")
    if joined and not joined.startswith("ray://"):
        # Workers are told the cluster's address, as for a local instance below: Train's
        # helpers otherwise look it up and can pick another instance on the same machine.
        try:
            resolved = bootstrap_address(joined)
        except ConnectionError as e:  # "auto" and no cluster on this machine
            raise ConfigError(f"--address {joined}: no Ray cluster found ({e}). Start "
                              f"one (ray start --head, or ray up cluster.yaml) or drop "
                              f"--address to run on this machine alone") from e
        if resolved:
            # Ray waits minutes on an address where nothing listens; a plain connect tells now.
            host, _, port = resolved.rpartition(":")
            try:
                socket.create_connection((host, int(port)), timeout=5).close()
            except (OSError, ValueError) as e:
                raise ConfigError(f"--address {joined}: no Ray cluster to connect to "
                                  f"({e}). Start one (ray start --head, or ray up "
                                  f"cluster.yaml) or drop --address to run on this machine "
                                  f"alone") from e
            runtime_env = {"env_vars": {"RAY_ADDRESS": resolved}}
    if not joined:
        port = free_gcs_port()
        runtime_env = {"env_vars": {
            # A local instance has no spot nodes to watch: Train's preemption watcher would
            # only add a process start (~1.5 s of CPU) to every data-parallel trial.
            "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
            # Ray Train's helpers look their cluster up by address discovery, which fails
            # ("multiple active Ray instances") when a second sweep runs on this machine, and
            # their trials then wait forever. So the GCS gets a known port and workers its
            # address.
            "RAY_ADDRESS": f"{ray.util.get_node_ip_address()}:{port}"}}
        os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    if os.environ.get(CPU_FOR_MISSING_GPU) == "1":
        runtime_env = runtime_env or {"env_vars": {}}
        runtime_env["env_vars"][CPU_FOR_MISSING_GPU] = "1"
        print(f"[ray] {CPU_FOR_MISSING_GPU}=1: a trial given a GPU that torch cannot see "
              f"trains on the CPU (each such trial says so in its log)")
    try:
        ctx = ray.init(address=joined or "local", include_dashboard=True,
                       dashboard_host="127.0.0.1", configure_logging=True,
                       logging_level="WARNING", runtime_env=runtime_env,
                       # Worker logs stay in the session's log folder (printed on errors).
                       log_to_driver=False)
    finally:
        os.environ.pop("RAY_GCS_SERVER_PORT", None)
    _set_data_context()
    if ctx.dashboard_url:
        print(f"[ray] dashboard: http://{ctx.dashboard_url}")


def bootstrap_address(address: str) -> str | None:
    """The "host:port" `ray.init` would connect to for `address` ("host:port" or "auto"), or
    None for none (`ray.init` then starts or finds one itself).

    With a Ray `ray_private.checked()` lists, Ray's own resolution (a private module): "auto"
    is the instance `ray start` made last on this machine (ConnectionError when there is none),
    a loopback host this node's IP. With any other Ray, plain parsing does the same for a
    "host:port", and "auto" gives None: `ray.init` still finds the cluster, but it is not
    checked before, and workers are not told its address.
    """
    if ray_private.checked():
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(address)
    import ray

    if address in ("auto", "local"):
        return None
    host, colon, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # an IPv6 address is written [addr]:port
    if not colon or not host or not port.isdigit():
        raise ValueError(f"Invalid address format: {address}")
    if host in ("localhost", "127.0.0.1", "::1"):
        # A worker on another machine cannot reach a loopback address: it gets this node's.
        host = ray.util.get_node_ip_address()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _set_data_context() -> None:
    import ray.data

    data_ctx = ray.data.DataContext.get_current()
    data_ctx.enable_progress_bars = False
    # Same rows in the same order every epoch: each epoch's shuffle is then seeded alone.
    data_ctx.execution_options.preserve_order = True


_stopping: threading.Thread | None = None


def stop_ray_soon() -> None:
    """Stop Ray in a thread while the results are written (which needs no Ray): the stop
    mostly waits for Ray's processes to end (~1.1 s here, bench/overhead.py)."""
    global _stopping
    if _stopping is None:
        _stopping = threading.Thread(target=stop_ray, name="raygenre-ray-stop")
        _stopping.start()


def stop_ray() -> None:
    """Stop the Ray this run started (or leave the cluster it joined) now: at exit, Ray's
    own hook first sleeps 0.5 s for worker log lines, which raygenre does not forward
    (0.7 s less from the last line to the prompt, bench/overhead.py)."""
    global _stopping
    if _stopping is not None and _stopping is not threading.current_thread():
        _stopping.join()
        _stopping = None
        return
    if ray_running():
        sys.modules["ray"].shutdown()


def cluster_nodes(joined: bool) -> list[Node]:
    """The node shapes trials are sized for: on a `ray up` cluster whose node types declare
    their resources, what it can grow to (GPU nodes may come later); else what Ray reports
    alive."""
    import ray

    if joined and AUTOSCALER_CONFIG.exists():
        nodes = nodes_from_autoscaler(yaml.safe_load(AUTOSCALER_CONFIG.read_text()))
        if nodes is not None:
            return nodes
        print(f"[grid] {AUTOSCALER_CONFIG}: its node types declare no resources; trials are "
              f"sized from the nodes alive now")
    return nodes_from_ray(ray.nodes())


def check_storage(storage: Location, joined: bool) -> None:
    """Before any trial: on several machines the run folder must be one they all see."""
    import ray

    ips = [n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")]
    why = check_shared(storage, ips, may_grow=joined and AUTOSCALER_CONFIG.exists())
    try:
        storage.mkdir()
    except OSError as e:  # no credentials, no such bucket, read-only mount...
        raise StorageError(f"--storage {storage}: cannot create the run folder there "
                           f"({type(e).__name__}: {e})") from e
    print(f"[grid] storage {storage}: {why}")


def free_gcs_port() -> int:
    """A free port for the GCS, never one of Ray's fixed defaults: the OS handed out 52365 once
    (a CI run), the dashboard agent's default, and Ray refused to start."""
    while True:
        with socket.socket() as sock:
            sock.bind(("", 0))
            port = sock.getsockname()[1]
        if port not in RAY_DEFAULT_PORTS:
            return port
