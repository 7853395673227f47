"""A simulated multi-node cluster on this machine: a head and worker nodes started with `ray start`, each
its own raylet with its own resources and temp dir, sharing nothing but the S3 server (data and storage).
One Ray Train worker per worker node (each offers one `train_slot`); the driver is this process, attached
to the head. Then a worker node is lost as a reclaimed spot machine is (its raylet and every process on it
killed): with a replacement node the run ends in the uninterrupted run's state; with `scaling.min_workers`
it goes on with the one worker left. Finally `--resume` runs as a job placed on a worker node."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from ray_head import LocalCluster
from train_support import (
    TINY,
    assert_same_state,
    checkpoint_names,
    convert_tiny_synthetic,
    fetched,
    load_checkpoint,
    read_json,
    run_folder,
    train,
    when_sealed,
)

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.s3]

ITERS = 8  # the tiny config: 2 epochs x 4 iterations


@pytest.fixture(scope="module")
def cluster(s3_server):
    import ray

    s3_server.make_bucket("nodes")
    saved = dict(os.environ)
    os.environ.update(s3_server.env())
    # A worker group that cannot be placed (a node just died) gives up after 30 s, not 60 (Ray Train
    # passes this from the driver to its controller); the elastic restart then counts the nodes again.
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = "30"
    c = LocalCluster(s3_server.env())
    c.s3 = s3_server
    try:
        c.add("node_a")
        c.add("node_b")
        convert_tiny_synthetic(s3_server.uri("nodes", "data", endpoint_in_uri=False))
        ray.init(address=c.head.gcs_address, log_to_driver=False)
        yield c
    finally:
        ray.shutdown()
        c.stop()
        os.environ.clear()
        os.environ.update(saved)


def _args(c: LocalCluster, name: str, *extra: str) -> list[str]:
    return [
        f"--set=data.root={c.s3.uri('nodes', 'data', endpoint_in_uri=False)}",
        f"--set=storage.path={c.s3.uri('nodes', 'runs', endpoint_in_uri=False)}",
        f"--set=storage.name={name}",
        "--set=data.deterministic=true",
        "--set=storage.checkpoint_every_iters=2",
        "--set=scaling.resources_per_worker={train_slot: 1}",
        "--set=max_failures=2",
        "--set=method.sup_only_epochs=0",
        *extra,
    ]


def _final(c: LocalCluster, name: str) -> tuple[dict, dict, dict]:
    fs, run = run_folder(c.s3.uri("nodes", "runs", endpoint_in_uri=False), name)
    with fetched(fs, f"{run}/checkpoint_{ITERS:08d}") as directory:
        state = load_checkpoint(directory)
        meta = read_json(fs, f"{run}/checkpoint_{ITERS:08d}/meta.json")
    return state, meta, read_json(fs, f"{run}/summary.json")


def _kill_when_sealed(c: LocalCluster, name: str, node: str, iteration: int) -> tuple[threading.Thread, dict]:
    fs, run = run_folder(c.s3.uri("nodes", "runs", endpoint_in_uri=False), name)
    fired: dict = {}
    watcher = threading.Thread(
        target=when_sealed,
        args=(fs, f"{run}/checkpoint_{iteration:08d}/meta.json", lambda: c.nodes[node].kill(), fired),
        daemon=True,
    )
    watcher.start()
    return watcher, fired


@pytest.mark.timeout(300)
def test_two_nodes_share_only_object_storage(cluster):
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                seen.update(cluster.train_worker_nodes())
            except Exception:  # the state API may time out on a busy machine; the next poll retries
                pass
            time.sleep(1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        assert train(*_args(cluster, "straight")) == 0
    finally:
        done.set()
        watcher.join()
    assert seen == {"node_a", "node_b"}, "one Train worker on each worker node, none on the head"
    state, meta, summary = _final(cluster, "straight")
    assert summary["iterations"] == ITERS and summary["run_dir"].startswith("s3://nodes/runs/straight")
    assert meta["world_size"] == 2 and {"state.pt", "rank_0.pt", "rank_1.pt"} <= set(meta["files"])
    assert state["rank_0"]["shared_sha256"] == state["rank_1"]["shared_sha256"], "identical banks on both nodes"
    assert sum(state["state"]["method"]["memory_bank"]["counts"]) > 0


@pytest.mark.timeout(400)
def test_lost_worker_node_is_replaced_and_the_run_ends_as_if_uninterrupted(cluster):
    watcher, fired = _kill_when_sealed(cluster, "replaced", "node_a", 2)
    replacement: dict = {}

    def replace() -> None:  # the autoscaler's part: a new node after the old one is gone
        watcher.join()
        if "at" in fired:
            replacement["node"] = cluster.add("node_c")

    replacer = threading.Thread(target=replace, daemon=True)
    replacer.start()
    rc = train(*_args(cluster, "replaced", "--set=fault.step_delay_s=0.5"))
    replacer.join()
    assert "at" in fired, "the first checkpoint was never sealed"
    assert rc == 0, "losing a worker node must not end the run"
    state, meta, summary = _final(cluster, "replaced")
    reference, _, _ = _final(cluster, "straight")
    assert_same_state(reference, state)
    resumes = summary["resumes"]
    assert resumes and resumes[0]["iteration"] >= 2
    recover_s = resumes[0]["unix_time"] - fired["at"]
    print(f"node loss: first step again {recover_s:.1f} s after the kill (resumed at {resumes[0]['iteration']})")
    assert meta["world_size"] == 2


@pytest.mark.timeout(400)
def test_elastic_run_goes_on_with_the_workers_left(cluster):
    watcher, fired = _kill_when_sealed(cluster, "elastic", "node_c", 2)
    rc = train(*_args(cluster, "elastic", "--set=scaling.min_workers=1", "--set=fault.step_delay_s=0.5"))
    watcher.join()
    assert "at" in fired and rc == 0
    state, meta, summary = _final(cluster, "elastic")
    assert summary["iterations"] == ITERS and summary["resumes"], "restarted from a checkpoint"
    recover_s = summary["resumes"][0]["unix_time"] - fired["at"]
    print(f"elastic: first step on one worker {recover_s:.1f} s after the kill")
    assert meta["world_size"] == 1, "the last iterations ran on the one worker left"
    assert set(meta["files"]) >= {"state.pt", "rank_0.pt"} and "rank_1.pt" not in meta["files"]
    assert cluster.alive_node_names() == {"head", "node_b"}, "the killed nodes are reported dead"


@pytest.mark.timeout(300)
def test_resume_runs_from_a_worker_node(cluster):
    """`--resume` needs nothing from the node that ran the first part: a job placed on node_b (by its own
    resource) continues the finished straight run for one more epoch, from its checkpoint in S3."""
    storage = cluster.s3.uri("nodes", "runs", endpoint_in_uri=False)
    cluster.add("node_d")  # two train slots again (node_b and node_d): the run's two workers
    cmd = [
        "ray",
        "job",
        "submit",
        "--working-dir",
        str(REPO),
        "--entrypoint-resources",
        '{"node_b": 1}',
        "--",
        "python",
        "-m",
        "u2pl_ray.train",
        "--config",
        os.path.relpath(TINY, REPO),
        f"--resume={storage}/straight",
        "--set=schedule.epochs=3",
    ]
    done = cluster.head.run(*cmd[1:], timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    fs, run = run_folder(storage, "straight")
    assert checkpoint_names(fs, run)[-1] == "checkpoint_00000012"
    summary = read_json(fs, f"{run}/summary.json")
    assert summary["iterations"] == 12 and [r["iteration"] for r in summary["resumes"]] == [ITERS]
