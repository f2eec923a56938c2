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
    # The project itself and Ray's token reach every node; the setup script is the project's.
    assert config["file_mounts"].get("~/raygenre") == "."
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    assert config["setup_commands"] == ["bash ~/raygenre/cluster-setup.sh"]
    # Token authentication said explicitly wherever Ray starts, not left to a file's presence.
    for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        assert "ray start" not in c or "RAY_AUTH_MODE=token ray start" in c, c


def test_setup_pins_match_pyproject() -> None:
    script = (ROOT / "cluster-setup.sh").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    for pin in ("torch==2.11.0", "torchaudio==2.11.0", "ray[default,data,train,tune]==2.60.0"):
        # Every node installs the set CI tests: Ray's pin is pyproject.toml's (every node must
        # run the driver's Ray), torch's (a range there) the exact one in constraints.txt.
        assert f'"{pin}"' in script, pin
        assert pin.replace("[default,data,train,tune]", "") in constraints, pin
    assert '"ray[default,data,train,tune]==2.60.0"' in pyproject


SHARED = "# --- From here on, the same as"


def _shared_text(name: str) -> str:
    return (ROOT / name).read_text().split(SHARED, 1)[1].split("\n", 1)[1]


def test_both_files_share_their_commands() -> None:
    """Testing the on-prem file through `ray up` (tests/test_launcher.py) tests the AWS file's
    commands: everything after the provider sections is the same, text and parsed values."""
    assert _shared_text("cluster.yaml") == _shared_text("cluster-onprem.yaml")
    aws, onprem = _load("cluster.yaml"), _load("cluster-onprem.yaml")
    keys = ("file_mounts", "rsync_exclude", "initialization_commands", "setup_commands",
            "head_setup_commands", "worker_setup_commands", "head_start_ray_commands",
            "worker_start_ray_commands")
    for key in keys:
        assert aws.get(key) == onprem.get(key), key
    # Nothing else (besides where the machines come from) may set commands in one file only.
    provider_keys = {"cluster_name", "provider", "auth", "available_node_types",
                     "head_node_type", "max_workers", "min_workers", "upscaling_speed",
                     "idle_timeout_minutes"}
    assert set(aws) - provider_keys == set(onprem) - provider_keys == set(keys) - {
        "initialization_commands", "head_setup_commands", "worker_setup_commands"}


def test_aws_names_an_image_for_torch_2_11() -> None:
    """Ray 2.60's default AMI (no ImageId) is an Ubuntu 18.04 DLAMI with Python 3.7."""
    types = _validated(_load("cluster.yaml"))["available_node_types"]
    images = {c["node_config"].get("ImageId") for c in types.values()}
    # One image for all: the driver on the head and the trials must run the same Python.
    assert len(images) == 1
    image = images.pop()
    assert image.startswith("resolve:ssm:/aws/service/deeplearning/ami/x86_64/"), image
    assert "ubuntu-24.04" in image
    # The lookup command for pinning a release sits in the file, naming the same parameter.
    assert f"--name {image.removeprefix('resolve:ssm:')}" in (ROOT / "cluster.yaml").read_text()


def test_region_is_named_once() -> None:
    text = (ROOT / "cluster.yaml").read_text()
    region = _load("cluster.yaml")["provider"]["region"]
    lines = [line for line in text.splitlines()
             if region in line and not line.lstrip().startswith("#")]
    assert len(lines) == 1, lines


def test_docs_commands_are_the_tested_ones() -> None:
    """README's cluster lines are among docs/cluster.md's block that tests/test_launcher.py runs."""
    from tests.test_launcher import MARKER, doc_commands, readme_cluster_commands

    docs = (ROOT / "docs" / "cluster.md").read_text()
    assert MARKER in docs
    tested = doc_commands(docs)
    assert any(c.startswith("RAY_UP_enable_autoscaler_v2=0 ray up") for c in tested), tested
    assert any("ray job submit" in c for c in tested), tested
    readme = readme_cluster_commands()
    assert readme and all(c in tested for c in readme), (readme, tested)


def test_aws_has_spot_with_on_demand_fallback() -> None:
    types = _validated(_load("cluster.yaml"))["available_node_types"]
    spot = [t for t, c in types.items() if c["node_config"].get("InstanceMarketOptions")]
    ondemand = [t for t, c in types.items() if t not in spot and t != "head.cpu"]
    assert spot and ondemand
    for t in spot + ondemand:  # workers read and write the S3 run folder
        # Not the head's profile (it launches and ends instances): S3 only, docs/cluster.md.
        assert types[t]["node_config"]["IamInstanceProfile"] == {"Name": "raygenre-worker"}


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
