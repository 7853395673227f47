"""The object store goes away mid-run: data shards and checkpoints both live on the local S3 server,
which a watcher thread stops once the first checkpoint is sealed. The run must give up after bounded
retries with an error that says what failed and how to resume; once the server is back, `--resume`
finishes the run from that checkpoint."""

from __future__ import annotations

import threading
import time

import pytest
from fixtures_s3 import SeaweedServer
from train_support import checkpoint_names, convert_tiny_synthetic, local_ray, read_json, run_folder, train, when_sealed

pytestmark = [pytest.mark.ray, pytest.mark.s3, pytest.mark.slow]

GIVE_UP_WITHIN_S = 150  # connect timeout 5 s x 3 attempts per request, a few requests, Ray's teardown


@pytest.fixture
def own_server(tmp_path, monkeypatch):
    """A server of its own: stopping the session's shared one would disturb the tests after this one."""
    server = SeaweedServer(tmp_path / "weed").start()
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    try:
        yield server
    finally:
        server.close()


@pytest.mark.timeout(600)
def test_s3_outage_fails_cleanly_then_resume_completes(own_server, capsys):
    server = own_server
    server.make_bucket("outage")
    # The endpoint comes from AWS_ENDPOINT_URL, so the run's URI is a plain s3:// one.
    data = server.uri("outage", "data", endpoint_in_uri=False)
    storage = server.uri("outage", "runs", endpoint_in_uri=False)
    convert_tiny_synthetic(data)
    args = [
        f"--set=data.root={data}",
        f"--set=storage.path={storage}",
        "--set=storage.name=outage",
        "--set=schedule.epochs=3",
        "--set=storage.checkpoint_every_iters=3",
        "--set=eval.every_epochs=0",
        "--set=fault.step_delay_s=0.5",
    ]
    fs, run = run_folder(storage, "outage")
    stopped: dict = {}
    with local_ray(server.env()):
        watcher = threading.Thread(
            target=when_sealed,
            args=(fs, f"{run}/checkpoint_00000003/meta.json", lambda: server.stop(grace_s=5), stopped),
            daemon=True,
        )
        watcher.start()
        capsys.readouterr()
        rc = train(*args)
        ended = time.time()
        watcher.join()
        err = capsys.readouterr().err
        assert "at" in stopped, "the first checkpoint was never sealed"
        assert rc == 1
        assert ended - stopped["at"] < GIVE_UP_WITHIN_S, "retries were not bounded"
        assert "error: training failed" in err and f"resume with: python -m u2pl_ray.train --resume {storage}" in err
        assert server.secret_key not in err

        server.start()
        assert checkpoint_names(fs, run)[-1] == "checkpoint_00000003", "nothing after the outage was sealed"
        assert train(f"--resume={storage}/outage", "--set=fault.step_delay_s=0") == 0
    summary = read_json(fs, f"{run}/summary.json")
    assert summary["iterations"] == 12
    assert [r["iteration"] for r in summary["resumes"]] == [3]
