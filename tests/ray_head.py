"""Real Ray nodes on this machine: a head (`ray start --head --block` on 127.0.0.1 with free ports) for
job-submission tests, and worker nodes joining it (each its own raylet, resources and temp dir: a
simulated multi-node cluster). Every node runs in its own process group, so that stopping or killing it
never touches other Ray processes on the machine (`ray stop` would end them all by name)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RayHead:
    proc: subprocess.Popen
    gcs_address: str
    dashboard_url: str
    env: dict[str, str]
    log: Path
    ray_tmp: Path

    def run(self, *args: str, timeout: float = 300, cwd: str | None = None) -> subprocess.CompletedProcess:
        """A `ray ...` client command against this head."""
        return subprocess.run(
            [str(BIN / "ray"), *args], env=self.env, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )

    def stop(self, grace_s: float = 20) -> None:
        _stop_group(self.proc, grace_s)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)

    def alive_nodes(self) -> list[dict]:
        """The cluster's live nodes (state API over the dashboard): node_id, resources_total, is_head_node."""
        from ray.util.state import list_nodes

        nodes = list_nodes(
            address=self.dashboard_url,
            filters=[("state", "=", "ALIVE")],
            detail=True,
            timeout=10,
            raise_on_missing_output=False,
        )
        return [n if isinstance(n, dict) else n.__dict__ for n in nodes]


@dataclass
class RayWorkerNode:
    proc: subprocess.Popen
    name: str
    log: Path

    def kill(self) -> float:
        """The node vanishes as a reclaimed spot machine does: SIGKILL to its raylet and every process it
        started. Returns the time of the kill."""
        at = time.time()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        return at

    def stop(self, grace_s: float = 20) -> None:
        _stop_group(self.proc, grace_s)


def _stop_group(proc: subprocess.Popen, grace_s: float) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _node_env(extra_env: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra_env or {})
    # Jobs run the `python` on PATH when the head started: make it this virtual environment's.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = "disabled"  # the same on the head and on every client
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


def _agent_ports() -> list[str]:
    return [
        f"--dashboard-agent-listen-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]


def start_worker_node(
    head: RayHead,
    tmp: Path,
    name: str,
    *,
    num_cpus: float = 1,
    resources: dict[str, float] | None = None,
    extra_env: dict[str, str] | None = None,
    object_store_bytes: int = 300_000_000,
    timeout_s: float = 90,
) -> RayWorkerNode:
    """A worker node joining `head` with its own resources and temp dir (`tmp/name`); returns once the
    head lists it alive. The node's own resource `name: 100` lets a job or task be pinned to it."""
    log = tmp / f"ray-{name}.log"
    cmd = [
        str(BIN / "ray"),
        "start",
        "--block",
        f"--address={head.gcs_address}",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={num_cpus:g}",
        f"--resources={json.dumps({name: 100, **(resources or {})})}",
        f"--object-store-memory={object_store_bytes}",
        f"--temp-dir={tmp / name}",
        *_agent_ports(),
    ]
    before = {n["node_id"] for n in head.alive_nodes()}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, env=_node_env(extra_env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    node = RayWorkerNode(proc=proc, name=name, log=log)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"ray start ({name}) exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if any(n["node_id"] not in before and name in n["resources_total"] for n in head.alive_nodes()):
                return node
            time.sleep(1)
        raise RuntimeError(f"worker node {name} did not join within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")
    except BaseException:
        node.stop()  # never leave a half-started node behind
        raise


def start_head(
    tmp: Path,
    extra_env: dict[str, str] | None = None,
    num_cpus: int = 2,
    resources: dict[str, float] | None = None,
    autoscaling_config: Path | None = None,
) -> RayHead:
    """`autoscaling_config`: a `fake_multinode` cluster YAML (cluster-local.yaml); the head's autoscaler
    then starts and stops worker nodes on this machine as the demand asks."""
    env = _node_env(extra_env)
    # Ray's unix sockets live under its temp dir, at most 107 bytes a path: pytest's (and xdist's)
    # tmp paths can be too long, so Ray gets a short one of its own (removed by stop()).
    ray_tmp = Path(tempfile.mkdtemp(prefix="u2h-", dir="/tmp"))
    port, dash = free_port(), free_port()
    log = tmp / "ray-head.log"
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--num-cpus={num_cpus}",
        "--object-store-memory=1000000000",
        f"--temp-dir={ray_tmp}",
        "--disable-usage-stats",
        f"--ray-client-server-port={free_port()}",
        *_agent_ports(),
        *([f"--resources={json.dumps(resources)}"] if resources else []),
    ]
    if autoscaling_config is not None:
        env["RAY_FAKE_CLUSTER"] = "1"
        cmd.append(f"--autoscaling-config={_with_gcs_port(autoscaling_config, port, tmp)}")
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2):
                break
        except OSError:
            time.sleep(1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        raise RuntimeError(f"the Ray dashboard did not come up at {url}:\n{log.read_text()[-3000:]}")
    env["RAY_ADDRESS"] = url
    return RayHead(proc=proc, gcs_address=f"127.0.0.1:{port}", dashboard_url=url, env=env, log=log, ray_tmp=ray_tmp)


def _with_gcs_port(config: Path, port: int, tmp: Path) -> Path:
    """A copy of a fake_multinode cluster YAML whose nodes join the head at `port` (not 6379)."""
    import yaml

    data = yaml.safe_load(config.read_text())
    data["provider"]["gcs_address"] = f"127.0.0.1:{port}"
    out = tmp / config.name
    out.write_text(yaml.safe_dump(data))
    return out


# The head notices a dead raylet after ~5 missed 1-second health checks (the default waits ~30 s).
FAST_NODE_DEATH = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "5",
}


class LocalCluster:
    """A head (1 CPU, no training slot) and worker nodes that each offer one `train_slot` (the config's
    `scaling.resources_per_worker: {train_slot: 1}` then puts one Ray Train worker on each), all started
    with `env` (e.g. S3 credentials, as a cloud node would have them). Temp dirs under a short /tmp path:
    Ray's unix sockets live there and a socket path may not exceed 107 bytes."""

    def __init__(self, env: dict[str, str]):
        self.tmp = Path(tempfile.mkdtemp(prefix="u2n-", dir="/tmp"))
        self.env = env
        self.head = start_head(self.tmp, extra_env={**env, **FAST_NODE_DEATH}, num_cpus=1)
        self.nodes: dict[str, RayWorkerNode] = {}

    def add(self, name: str) -> RayWorkerNode:
        # One retry: on a loaded 2-core machine a raylet can miss Ray's start-up deadline.
        for attempt in (1, 2):
            try:
                self.nodes[name] = start_worker_node(
                    self.head, self.tmp, name, num_cpus=1, resources={"train_slot": 1}, extra_env=self.env
                )
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        return self.nodes[name]

    def alive_node_names(self) -> set[str]:
        return {own_name(n) for n in self.head.alive_nodes()}

    def train_worker_nodes(self) -> set[str]:
        """The nodes (by their own resource name) that hold a live Ray Train worker now."""
        from ray.util.state import list_actors

        actors = list_actors(
            address=self.head.dashboard_url,
            filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
            timeout=10,
            raise_on_missing_output=False,
        )
        names = {n["node_id"]: own_name(n) for n in self.head.alive_nodes()}
        return {names.get(a.node_id, "?") for a in actors}

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop(grace_s=2)
        self.head.stop(grace_s=2)
        shutil.rmtree(self.tmp, ignore_errors=True)


def own_name(node: dict) -> str:
    """A worker node's own resource name (`node_a`, ...), `head` for the head."""
    return next((k for k in node["resources_total"] if k.startswith("node_")), "head")
