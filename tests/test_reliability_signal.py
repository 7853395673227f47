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


def _run_and_signal(args: list[str], sig: signal.Signals) -> str:
    """Start a real driver, send `sig` once a progress line came back, expect a clean stop; its output."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "u2pl_ray.train", "--config", TINY, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
    )
    out: list[str] = []
    reader = threading.Thread(target=_collect, args=(proc, out), daemon=True)
    reader.start()
    _wait_for(out, "| it ", proc, timeout_s=180)  # training has started: a progress line came back
    proc.send_signal(sig)
    try:
        rc = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the driver did not stop within 120 s of {sig.name}")
    reader.join(timeout=10)
    text = "".join(out)
    assert rc == 0, text
    assert f"{sig.name}: stopping after a checkpoint" in text
    return text


@pytest.mark.timeout(420)
def test_sigterm_then_ctrl_c_on_the_driver_stop_with_checkpoints_and_resume_finishes(tmp_path):
    args = [
        f"--set=storage.path={tmp_path}",
        "--set=storage.name=signalled",
        f"--set=data.cache_dir={tmp_path}/cache",
        "--set=schedule.epochs=3",
        "--set=eval.every_epochs=0",
        "--set=storage.checkpoint_every_iters=100",
        "--set=fault.step_delay_s=0.7",
    ]
    fs, run = run_folder(str(tmp_path), "signalled")

    # SIGTERM (kill, Kubernetes, preemption notices) on a fresh run.
    text = _run_and_signal(args, signal.SIGTERM)
    summary = read_json(fs, f"{run}/summary.json")
    assert summary["stop_reason"] == "stop"
    first_stop = summary["iterations"]
    assert 0 < first_stop < 12
    assert checkpoint_names(fs, run) == [f"checkpoint_{first_stop:08d}"], "the stop wrote its own checkpoint"
    assert f"--resume {run}" in text, "the driver says how to resume"
    # The console carries the trainer's lines, not Ray's per-report dumps or per-epoch progress bars.
    for noise in (
        "Reporting training result",
        "Checkpoint successfully created",
        "Running Dataset",
        "Execution plan of Dataset",
        "Started training worker group",
        "all_gather_into_tensor",
    ):
        assert noise not in text, f"{noise!r} on the console:\n{text}"

    # Ctrl-C (SIGINT) on the resumed run: a second stop, later than the first.
    _run_and_signal([f"--resume={run}", "--set=fault.step_delay_s=0.7"], signal.SIGINT)
    summary = read_json(fs, f"{run}/summary.json")
    assert summary["stop_reason"] == "stop"
    second_stop = summary["iterations"]
    assert first_stop < second_stop < 12
    assert f"checkpoint_{second_stop:08d}" in checkpoint_names(fs, run)

    with local_ray():
        assert train(f"--resume={run}", "--set=fault.step_delay_s=0") == 0
    summary = read_json(fs, f"{run}/summary.json")
    assert summary["iterations"] == 12 and summary["stop_reason"] != "stop"
    assert [r["iteration"] for r in summary["resumes"]] == [first_stop, second_stop]
