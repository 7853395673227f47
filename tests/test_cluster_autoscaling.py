"""Autoscaling for real on one machine: a head started with cluster-local.yaml (Ray's `fake_multinode`
provider, cluster.yaml's worker types with CPU resources) has no worker nodes; a training run whose two
workers each need a `train_slot` makes the autoscaler add nodes, trains on them, and the idle nodes are
removed afterwards. The node count is sampled every second throughout."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from ray_head import start_head
from train_support import train

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.mark.timeout(420)
def test_a_job_scales_the_cluster_up_and_idle_nodes_are_removed(tmp_path):
    import ray

    head = start_head(tmp_path, num_cpus=1, autoscaling_config=REPO / "cluster-local.yaml")
    samples: list[tuple[float, int, float]] = []  # (seconds, worker nodes, train slots)
    done = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not done.is_set():
            try:
                workers = [n for n in head.alive_nodes() if not n["is_head_node"]]
                slots = sum(n["resources_total"].get("train_slot", 0) for n in workers)
                samples.append((time.monotonic() - started, len(workers), slots))
            except Exception:  # the state API can time out on a busy machine; the next sample retries
                pass
            time.sleep(1)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        sampler.start()
        time.sleep(3)
        ray.init(address=head.gcs_address, log_to_driver=False)
        job_started = samples[-1][0] if samples else 0.0
        rc = train(
            f"--set=storage.path={tmp_path}",
            "--set=storage.name=scaled",
            f"--set=data.cache_dir={tmp_path / 'cache'}",
            "--set=scaling.resources_per_worker={train_slot: 1}",
        )
        job_ended = samples[-1][0]
        ray.shutdown()
        deadline = time.monotonic() + 120  # idle_timeout_minutes: 0.25, plus the autoscaler's rounds
        while time.monotonic() < deadline and (not samples or samples[-1][0] < job_ended or samples[-1][1] > 0):
            time.sleep(1)
    finally:
        done.set()
        sampler.join()
        ray.shutdown()
        head.stop(grace_s=2)
    print("node samples (s, worker nodes, train slots):", json.dumps([s for s in samples if s[1]][:3]), "...")
    assert rc == 0
    summary = json.loads((tmp_path / "scaled" / "summary.json").read_text())
    assert summary["iterations"] == 8
    before = [s for s in samples if s[0] <= job_started]
    during = [s for s in samples if job_started < s[0] <= job_ended]
    after = [s for s in samples if s[0] > job_ended]
    assert before and all(n == 0 for _, n, _ in before), "the cluster starts with the head alone"
    assert max(slots for _, _, slots in during) >= 2, "nodes for both training workers were added"
    assert after and after[-1][1] == 0, f"idle worker nodes were removed (last samples: {after[-3:]})"
    grow = next(t for t, n, _ in during if n) - job_started
    shrink = next(t for t, n, _ in after if n == 0) - job_ended
    print(f"first worker node {grow:.0f} s after the job started; none {shrink:.0f} s after it ended")
