"""SIGTERM (what `kill`, Kubernetes and preemption notices send) and Ctrl-C on the driver of a real
`python -m u2pl_ray.train` process: the workers write a checkpoint where they are and the run stops;
`--resume` continues it to the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from train_support import REPO, TINY, checkpoint_names, local_ray, read_json, run_folder, train

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _collect(proc: subprocess.Popen, out: list[str]) -> None:
    for line in proc.stdout:
        out.append(line)


def _wait_for(out: list[str], text: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(text in line for line in out):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"{text!r} never appeared; output:\n{''.join(out)}")


@pytest.mark.timeout(420)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_on_the_driver_stops_with_a_checkpoint_and_resume_finishes(tmp_path, sig):
    args = [f"--set=storage.path={tmp_path}", "--set=storage.name=signalled", f"--set=data.cache_dir={tmp_path}/cache",
            "--set=schedule.epochs=3", "--set=eval.every_epochs=0", "--set=storage.checkpoint_every_iters=100",
            "--set=fault.step_delay_s=0.7"]
    proc = subprocess.Popen([sys.executable, "-m", "u2pl_ray.train", "--config", TINY, *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    out: list[str] = []
    reader = threading.Thread(target=_collect, args=(proc, out), daemon=True)
    reader.start()
    _wait_for(out, "| it ", proc, timeout_s=180)  # training has started: a progress line came back
    proc.send_signal(sig)
    try:
        rc = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the driver did not stop within 120 s of " + signal.Signals(sig).name)
    reader.join(timeout=10)
    text = "".join(out)
    assert rc == 0, text
    assert f"{signal.Signals(sig).name}: stopping after a checkpoint" in text
    fs, run = run_folder(str(tmp_path), "signalled")
    summary = read_json(fs, f"{run}/summary.json")
    assert summary["stop_reason"] == "stop"
    stopped_at = summary["iterations"]
    assert 0 < stopped_at < 12
    assert checkpoint_names(fs, run) == [f"checkpoint_{stopped_at:08d}"], "the stop wrote its own checkpoint"
    assert f"--resume {run}" in text, "the driver says how to resume"

    with local_ray():
        assert train(f"--resume={run}", "--set=fault.step_delay_s=0") == 0
    summary = read_json(fs, f"{run}/summary.json")
    assert summary["iterations"] == 12 and summary["stop_reason"] != "stop"
    assert [r["iteration"] for r in summary["resumes"]] == [stopped_at]
