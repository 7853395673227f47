"""`ray job submit` against a real head node: the job scripts in jobs/ and the training entry point."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from ray_head import start_head

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("head")
    node = start_head(tmp)
    try:
        yield node
    finally:
        node.stop()


def _script(head, name: str, *args: str, dry: bool = False, timeout: float = 400) -> subprocess.CompletedProcess:
    env = dict(head.env, DRY_RUN="1" if dry else "0")
    return subprocess.run(
        ["bash", str(REPO / "jobs" / name), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.timeout(600)
def test_train_job_submitted_with_working_dir_succeeds(head, tmp_path):
    runs = tmp_path / "runs"
    done = _script(
        head,
        "train.sh",
        "configs/tiny.yaml",
        f"--set=storage.path={runs}",
        "--set=storage.name=job",
        f"--set=data.cache_dir={tmp_path / 'cache'}",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
    job_id = re.search(r"Job '(raysubmit_\w+)' succeeded", output).group(1)
    from ray.job_submission import JobStatus, JobSubmissionClient

    assert JobSubmissionClient(head.dashboard_url).get_job_status(job_id) == JobStatus.SUCCEEDED
    summary = json.loads((runs / "job" / "summary.json").read_text())
    assert summary["iterations"] == 8 and summary["best_miou"] is not None


@pytest.mark.timeout(300)
def test_convert_and_evaluate_jobs_run_in_tiny_form(head, tmp_path):
    shards = tmp_path / "synthetic"
    done = _script(
        head,
        "convert_synthetic.sh",
        str(shards),
        "--num-train",
        "16",
        "--num-val",
        "4",
        "--image-size",
        "32",
        "--labeled-fractions",
        "1_4",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["name"] == "synthetic"


def test_every_job_script_builds_its_submit_command(head, tmp_path):
    cases = {
        "train.sh": ["configs/demo.yaml", "--set", "schedule.epochs=1"],
        "sweep.sh": ["configs/tune_demo.yaml"],
        "convert_voc.sh": ["/data/VOC2012", "/data/splits", "s3://bucket/voc"],
        "convert_cityscapes.sh": ["/data/cityscapes", "/data/splits", "s3://bucket/cs"],
        "convert_synthetic.sh": ["s3://bucket/syn"],
        "evaluate.sh": ["s3://bucket/runs/r", "--mode", "slide"],
        "predict.sh": ["s3://bucket/runs/r", "s3://bucket/in", "s3://bucket/out"],
    }
    for name, args in cases.items():
        done = _script(head, name, *args, dry=True, timeout=30)
        assert done.returncode == 0, (name, done.stderr)
        line = done.stdout.strip()
        assert line.startswith("ray job submit --address") and "--working-dir" in line, (name, line)
        assert "-- python -m u2pl_ray." in line, (name, line)
        assert head.dashboard_url in line
    # arguments are required, with a usage line
    done = _script(head, "evaluate.sh", dry=True, timeout=30)
    assert done.returncode != 0 and "usage" in done.stderr
