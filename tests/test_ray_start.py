"""How the CLI starts or joins Ray: the dashboard on loopback only, a clear error for a wrong
--address, and the storage check before any trial."""

from __future__ import annotations

import psutil
import pytest
import ray

from raygenre.config import ConfigError
from raygenre.sweep.cluster import start_ray


def test_local_dashboard_listens_on_loopback_only(capsys: pytest.CaptureFixture) -> None:
    try:
        start_ray(None)
        out = capsys.readouterr().out
        assert ray.cluster_resources()["CPU"] >= 1
        line = next(x for x in out.splitlines() if x.startswith("[ray] dashboard: "))
        url = line.split(": ", 1)[1]
        assert url.startswith("http://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        listening = [c.laddr.ip for c in psutil.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        assert listening == ["127.0.0.1"], listening
    finally:
        ray.shutdown()


def test_wrong_address_is_a_clear_error() -> None:
    try:
        with pytest.raises(ConfigError, match="--address 127.0.0.1:1: no Ray cluster"):
            start_ray("127.0.0.1:1")
    finally:
        ray.shutdown()


def test_without_address_a_sweep_gets_its_own_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray alone would join the instance another process started last (seen: a benchmark's
    sweep joined a test's cluster and died when the test shut it down)."""
    from ray.cluster_utils import Cluster

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    other = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        start_ray(None)
        assert ray.get_runtime_context().gcs_address != other.address
    finally:
        ray.shutdown()
        other.shutdown()


def test_the_gcs_port_is_never_one_of_rays_fixed_defaults(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """The OS once handed out 52365, the dashboard agent's default port, and Ray refused to
    start (seen in CI)."""
    import socket

    from raygenre.sweep import cluster

    offered = iter([52365, 8265, 6379, 40123])

    class FakeSocket:
        def __enter__(self):  # noqa: ANN204
            return self

        def __exit__(self, *a) -> None:  # noqa: ANN002
            pass

        def bind(self, address: tuple) -> None:
            self.port = next(offered)

        def getsockname(self) -> tuple:
            return ("", self.port)

    monkeypatch.setattr(socket, "socket", FakeSocket)
    assert cluster.free_gcs_port() == 40123
