"""A real Ray head node for job-submission tests: `ray start --head --block` on 127.0.0.1 with free
ports, in its own process group so that stopping it never touches other Ray processes on the machine
(`ray stop` would end them all by name)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
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

    def run(self, *args: str, timeout: float = 300, cwd: str | None = None) -> subprocess.CompletedProcess:
        """A `ray ...` client command against this head."""
        return subprocess.run(
            [str(BIN / "ray"), *args], env=self.env, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def start_head(tmp: Path, extra_env: dict[str, str] | None = None, num_cpus: int = 2) -> RayHead:
    env = dict(os.environ)
    env.update(extra_env or {})
    # Jobs run the `python` on PATH when the head started: make it this virtual environment's.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = "disabled"  # the same on the head and on every client
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
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
        f"--temp-dir={tmp / 'ray'}",
        "--disable-usage-stats",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]
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
        raise RuntimeError(f"the Ray dashboard did not come up at {url}:\n{log.read_text()[-3000:]}")
    env["RAY_ADDRESS"] = url
    return RayHead(proc=proc, gcs_address=f"127.0.0.1:{port}", dashboard_url=url, env=env, log=log)
