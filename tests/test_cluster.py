"""Both cluster files pass Ray's own validation (what `ray up` runs before launching), so a
broken edit fails CI, not a user's `ray up`."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parent.parent
FILES = ["cluster.yaml", "cluster-onprem.yaml"]


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def _validated(config: dict) -> dict:
    # `ray up`: fill the provider's defaults (for on-prem machines, turn the IP lists into node
    # types), then check the schema.
    config = prepare_config(copy.deepcopy(config))
    validate_config(config)
    return config


@pytest.mark.parametrize("name", FILES)
def test_cluster_file_passes_rays_own_validation(name: str) -> None:
    config = _validated(_load(name))
    assert config["head_node_type"] in config["available_node_types"]
    # Nothing listens beyond the head's loopback unless asked: the dashboard is port-forwarded.
    assert any("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"])
    # The project itself reaches every node; Ray's pin matches pyproject.toml's, and torch's
    # (a range in pyproject.toml) the exact set CI tests, constraints.txt.
    assert config["file_mounts"].get("~/raygenre") == "."
    pins = " ".join(config["setup_commands"])
    pyproject = (ROOT / "pyproject.toml").read_text()
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    for pin in ("torch==2.11.0", "torchaudio==2.11.0", "ray[default,data,train,tune]==2.60.0"):
        assert pin in pins and pin.replace("[default,data,train,tune]", "") in constraints, pin
    assert "ray[default,data,train,tune]==2.60.0" in pyproject


def test_aws_has_spot_with_on_demand_fallback() -> None:
    types = _validated(_load("cluster.yaml"))["available_node_types"]
    spot = [t for t, c in types.items() if c["node_config"].get("InstanceMarketOptions")]
    ondemand = [t for t, c in types.items() if t not in spot and t != "head.cpu"]
    assert spot and ondemand
    for t in spot + ondemand:  # workers read and write the S3 run folder
        assert types[t]["node_config"]["IamInstanceProfile"]


def test_onprem_lists_its_machines() -> None:
    config = _validated(_load("cluster-onprem.yaml"))
    assert config["provider"]["type"] == "local"
    assert len(config["provider"]["worker_ips"]) == config["max_workers"]


@pytest.mark.parametrize("name", FILES)
def test_validation_catches_a_broken_edit(name: str) -> None:
    config = _load(name)
    config["upscaling_speed"] = "fast"
    with pytest.raises(jsonschema.ValidationError, match="'fast' is not of type 'number'"):
        _validated(config)
