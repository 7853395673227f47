"""cluster.yaml passes Ray's own offline pre-flight checks (no cloud calls)."""

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parent.parent / "cluster.yaml"


def _load():
    return yaml.safe_load(CLUSTER.read_text())


def test_cluster_yaml_validates_with_rays_schema():
    config = prepare_config(_load())
    validate_config(config)
    nodes = config["available_node_types"]
    gpu_types = [n for n, spec in nodes.items() if spec["resources"].get("GPU", 0) > 0]
    assert gpu_types, "at least one GPU worker type"
    for name in gpu_types:
        assert nodes[name]["min_workers"] == 0, f"{name} must scale from zero"
    assert nodes[config["head_node_type"]]["resources"].get("GPU", 0) == 0
    for name, spec in nodes.items():
        assert "CPU" in spec["resources"], f"{name}: resources listed explicitly"
    assert any("ray[default" in cmd for cmd in config["setup_commands"])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.pop("head_node_type"),
        lambda c: c["available_node_types"]["gpu.1xa10g"].update(min_workers="two"),
        lambda c: c.update(max_workers=0) or c["available_node_types"]["gpu.1xa10g"].update(min_workers=3),
        lambda c: c["available_node_types"]["gpu.1xa10g"].update(bogus_key=1),
    ],
)
def test_broken_variants_are_caught(mutate):
    config = copy.deepcopy(_load())
    mutate(config)
    with pytest.raises((ValueError, jsonschema.ValidationError, KeyError)):
        validate_config(prepare_config(config))


def test_the_gcp_cluster_validates_and_scales_gpu_nodes_from_zero():
    config = prepare_config(yaml.safe_load((CLUSTER.parent / "cluster-gcp.yaml").read_text()))
    validate_config(config)
    assert config["provider"]["type"] == "gcp"
    nodes = config["available_node_types"]
    gpu = [spec for spec in nodes.values() if spec["resources"].get("GPU", 0) > 0]
    assert gpu and all(spec["min_workers"] == 0 for spec in gpu)
    for spec in gpu:
        accelerators = spec["node_config"]["guestAccelerators"]
        assert accelerators[0]["acceleratorCount"] == spec["resources"]["GPU"]
        assert spec["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE"


def test_the_local_autoscaling_cluster_has_cluster_yamls_worker_types_on_cpu():
    """cluster-local.yaml (fake_multinode, exercised by test_cluster_autoscaling) mirrors cluster.yaml's
    worker types, with CPU resources and a `train_slot` where the real types have GPUs."""
    # (prepare_config would merge in Ray's fake_multinode defaults, a file the wheel does not ship)
    local = yaml.safe_load((CLUSTER.parent / "cluster-local.yaml").read_text())
    validate_config(local)
    assert local["provider"]["type"] == "fake_multinode"
    workers = {n: s for n, s in local["available_node_types"].items() if n != local["head_node_type"]}
    real = {n: s for n, s in _load()["available_node_types"].items() if s["resources"].get("GPU", 0) > 0}
    assert set(workers) == set(real)
    for name, spec in workers.items():
        assert spec["min_workers"] == 0 and spec["resources"].get("GPU", 0) == 0
        assert spec["resources"]["train_slot"] == real[name]["resources"]["GPU"], name
