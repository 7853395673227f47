"""Helpers for the end-to-end training tests: a local Ray started with given environment variables,
the tiny config, and readers for what a run wrote (local or S3)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "configs" / "tiny.yaml")


@contextmanager
def local_ray(env: dict[str, str] | None = None) -> Iterator[None]:
    """A fresh 2-CPU local Ray whose workers see `env` (e.g. S3 credentials) from their start."""
    import ray

    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    # The dashboard stays on: without it, trials stopped by ASHA leak their workers (ray-notes).
    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=1 << 30,
        log_to_driver=False,
        runtime_env={"env_vars": dict(env or {})} if env else None,
    )
    try:
        yield
    except BaseException:
        _print_ray_state()  # a hang (the timeout fires here) or a failure: say what Ray was holding
        raise
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _print_ray_state() -> None:
    """Free and total resources, placement groups and live actors, for the test log."""
    import ray

    try:
        print(f"ray available: {ray.available_resources()}\nray total: {ray.cluster_resources()}", flush=True)
        for pg_id, pg in ray.util.placement_group_table().items():
            print(f"placement group {pg_id[:8]} {pg.get('state')}: {pg.get('bundles')}", flush=True)
        from ray.util.state import list_actors

        for actor in list_actors(filters=[("state", "=", "ALIVE")], timeout=10):
            print(f"actor {actor.class_name} pid {actor.pid}", flush=True)
    except Exception as exc:  # diagnostics must not hide the test's own error
        print(f"ray state unavailable: {exc!r}", flush=True)


def train(*args: str) -> int:
    from u2pl_ray.train import main

    return main(["--config", TINY, *args])


def run_folder(storage_uri: str, name: str) -> tuple[pafs.FileSystem, str]:
    from u2pl_ray.data.fs import resolve_filesystem

    fs, path = resolve_filesystem(storage_uri)
    return fs, f"{path.rstrip('/')}/{name}"


def read_json(fs: pafs.FileSystem, path: str) -> Any:
    with fs.open_input_stream(path) as src:
        return json.loads(src.read().decode())


def checkpoint_names(fs: pafs.FileSystem, run: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(run))
    return sorted(
        i.base_name for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")
    )


@contextmanager
def fetched(fs: pafs.FileSystem, path: str) -> Iterator[Path]:
    """A local copy of a folder of any filesystem."""
    if isinstance(fs, pafs.LocalFileSystem):
        yield Path(path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        pafs.copy_files(path, tmp, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        yield Path(tmp)


def load_checkpoint(directory: Path) -> dict[str, Any]:
    out = {"state": torch.load(directory / "state.pt", weights_only=True)}
    for rank_file in sorted(directory.glob("rank_*.pt")):
        out[rank_file.stem] = torch.load(rank_file, weights_only=True)
    return out


def assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Weights, teacher, optimiser, memory bank and progress equal to the bit."""
    sa, sb = a["state"], b["state"]
    for key in ("student", "teacher"):
        assert sa[key].keys() == sb[key].keys()
        for name in sa[key]:
            assert torch.equal(sa[key][name], sb[key][name]), f"{key}.{name} differs"
    for i, (ga, gb) in enumerate(zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values())):
        for k in ga:
            assert torch.equal(torch.as_tensor(ga[k]), torch.as_tensor(gb[k])), f"optimizer state {i}.{k} differs"
    bank_a, bank_b = sa["method"].get("memory_bank"), sb["method"].get("memory_bank")
    assert (bank_a is None) == (bank_b is None)
    if bank_a is not None:
        assert bank_a["counts"] == bank_b["counts"]
        for ra, rb in zip(bank_a["rows"], bank_b["rows"]):
            assert torch.equal(ra, rb), "memory bank differs"
    for key in ("iteration", "epoch", "batch_in_epoch"):
        assert sa["progress"][key] == sb["progress"][key]


def when_sealed(
    fs: pafs.FileSystem, meta_path: str, action: Callable[[], Any], fired: dict[str, float], timeout_s: float = 300.0
) -> None:
    """A watcher thread's body: runs `action` (stop the S3 server, kill a node) once `meta_path` exists
    (a checkpoint is sealed) and puts the Unix time it fired in `fired["at"]`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if fs.get_file_info(meta_path).is_file:
                fired["at"] = time.time()
                action()
                return
        except OSError:
            pass
        time.sleep(0.2)


def convert_tiny_synthetic(out_uri: str) -> None:
    """The tiny config's synthetic dataset as parquet shards at `out_uri` (for runs that must read
    their data from object storage)."""
    from u2pl_ray.data.convert import main as convert_main

    rc = convert_main(
        [
            "synthetic",
            "--out",
            out_uri,
            "--num-train",
            "48",
            "--num-val",
            "8",
            "--image-size",
            "32",
            "--labeled-fractions",
            "1_4",
            "--object-source",
            "procedural",
            "--shard-rows",
            "16",
            "--overwrite",
        ]
    )
    assert rc == 0, f"converting the tiny dataset to {out_uri} failed"


class FolderSession:
    """The per-worker loop's surroundings in one process, without Ray: checkpoints are copied into a
    local run folder, and a restart resumes from the newest one there (as RaySession does in storage)."""

    rank, world_size, local_rank = 0, 1, 0

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.reports: list[dict[str, Any]] = []

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, checkpoint_name: str | None) -> None:
        import shutil

        self.reports.append(dict(metrics))
        if checkpoint_dir is not None:
            shutil.copytree(checkpoint_dir, self.root / str(checkpoint_name))

    def latest_checkpoint(self):
        from contextlib import nullcontext

        from u2pl_ray.engine.checkpoint import checkpoint_dirs

        names = checkpoint_dirs(pafs.LocalFileSystem(), str(self.root))
        return nullcontext(Path(names[-1]) if names else None)

    def data_iterators(self) -> tuple[Any, Any]:
        return None, None  # data.reader: local reads the plan's shards in this process

    def progress(self, values: dict[str, Any]) -> None:
        pass

    def stop_requested(self) -> bool:
        return False
