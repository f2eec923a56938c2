"""The version gate on Ray's private modules (`sweep.ray_private`), and the cluster code's
public fallbacks: a Ray outside the checked versions must get the same answers, more slowly at
most. (The feed's fallbacks are tested in test_data.py, batch for batch.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from raygenre.config import ConfigError
from raygenre.sweep import cluster, ray_private


@pytest.fixture
def fresh_gate() -> Iterator[None]:
    """The gate asks once a process; a test that changes Ray's version asks again."""
    ray_private.checked.cache_clear()
    yield
    ray_private.checked.cache_clear()


def test_series_reads_rays_version_strings() -> None:
    assert ray_private.series("2.60.0") == (2, 60)
    assert ray_private.series("2.60.1rc1") == (2, 60)
    assert ray_private.series("3.0.0.dev0") == (3, 0)
    assert ray_private.series("nightly") is None


@pytest.mark.parametrize(("version", "ok"), [("2.60.0", True), ("2.60.3", True),
                                             ("2.59.1", False), ("2.61.0", False),
                                             ("3.0.0.dev0", False)])
def test_the_gate_opens_only_for_the_checked_series(version: str, ok: bool, fresh_gate: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.setattr(ray_private, "CHECKED_SERIES", ((2, 60),))
    monkeypatch.setattr(ray, "__version__", version)
    assert ray_private.checked() is ok


def test_the_installed_ray_is_checked() -> None:
    """The pinned Ray is one the fast paths were checked against: else every sweep would run
    the slower public paths without a word (update CHECKED_SERIES with the pin)."""
    assert ray_private.checked()


@pytest.mark.parametrize("address", ["10.1.2.3:6379", "localhost:6379", "127.0.0.1:1",
                                     "head-node:10001", "[::1]:6379", "[fd00::5]:6379"])
def test_public_address_parsing_resolves_as_ray_does(address: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A joined cluster's "host:port" comes out the same through Ray's private resolution and
    through the plain parsing a Ray not checked gets (loopback: this node's IP)."""
    from ray._private.services import canonicalize_bootstrap_address

    monkeypatch.setattr(ray_private, "checked", lambda: False)
    assert cluster.bootstrap_address(address) == canonicalize_bootstrap_address(address)


def test_public_address_parsing_leaves_auto_to_ray_init(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setattr(ray_private, "checked", lambda: False)
    assert cluster.bootstrap_address("auto") is None
    with pytest.raises(ValueError, match="Invalid address"):
        cluster.bootstrap_address("no-port")


def test_a_wrong_address_is_a_clear_error_on_the_public_path(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    import ray

    monkeypatch.setattr(ray_private, "checked", lambda: False)
    try:
        with pytest.raises(ConfigError, match="--address 127.0.0.1:1: no Ray cluster"):
            cluster.start_ray("127.0.0.1:1")
    finally:
        ray.shutdown()


def test_rays_default_ports_are_the_ones_written_out() -> None:
    """free_gcs_port avoids Ray's fixed ports without reading Ray's private constants; they
    must still be those constants."""
    from ray._private import ray_constants as rc

    assert cluster.RAY_DEFAULT_PORTS == {rc.DEFAULT_PORT, rc.DEFAULT_DASHBOARD_PORT,
                                         rc.DEFAULT_DASHBOARD_AGENT_LISTEN_PORT}
