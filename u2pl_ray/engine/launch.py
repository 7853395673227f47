"""Driver-side assembly shared by `train` and `tune`: Ray start-up, storage, the TorchTrainer."""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from u2pl_ray.config import Config, config_to_dict, dump_config

log = logging.getLogger(__name__)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Attach to the Ray cluster of a submitted job or a `ray start` node, else start one in-process.

    `ray.init()` without an address attaches to a running local cluster if there is one and
    otherwise starts an embedded one, which is what a user on a laptop or a cluster node expects.
    """
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"log_to_driver": True}
    if address:
        kwargs["address"] = address
    elif not os.environ.get("RAY_ADDRESS") and num_cpus:
        kwargs["num_cpus"] = num_cpus
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    ray.init(**kwargs)


@dataclass
class Storage:
    """Where a run's checkpoints and artefacts go: `uri` for people, (`fs`, `path`) for pyarrow."""

    uri: str
    fs: pafs.FileSystem
    path: str

    def join(self, *parts: str) -> "Storage":
        sep = "/" if not self.path.endswith("/") else ""
        tail = "/".join(parts)
        return Storage(f"{self.uri.rstrip('/')}/{tail}", self.fs, f"{self.path}{sep}{tail}")

    def write_text(self, text: str) -> None:
        self.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(self.path) as out:
            out.write(text.encode())

    def read_text(self) -> str:
        with self.fs.open_input_stream(self.path) as src:
            return src.read().decode()

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)


def resolve_storage(uri: str) -> Storage:
    if "://" in uri and not uri.startswith("file://"):
        from u2pl_ray.data.fs import resolve_filesystem

        fs, path = resolve_filesystem(uri)
        return Storage(uri.split("?", 1)[0], fs, path.rstrip("/"))
    local = Path(uri.removeprefix("file://")).expanduser().resolve()
    return Storage(str(local), pafs.LocalFileSystem(), str(local))


def run_name(cfg: Config) -> str:
    if cfg.storage.name:
        return cfg.storage.name
    return f"{cfg.name}-{_dt.datetime.now():%Y%m%d-%H%M%S}"


def write_run_config(run: Storage, cfg: Config) -> None:
    run.join("config.yaml").write_text(dump_config(cfg))


def build_trainer(
    cfg: Config, *, name: str, storage: Storage, dataset_info: Any, iters_per_epoch: int,
    datasets: dict[str, Any], board: Any = None, callbacks: list[Any] | None = None,
) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from u2pl_ray.data.stream import train_dataset_config
    from u2pl_ray.engine.callbacks import RunCallback
    from u2pl_ray.engine.ray_session import train_loop_per_worker

    sc = cfg.scaling
    resources: dict[str, float] = {"CPU": sc.cpus_per_worker}
    if sc.use_gpu:
        resources["GPU"] = sc.gpus_per_worker
    scaling = ScalingConfig(
        num_workers=sc.num_workers, use_gpu=sc.use_gpu, resources_per_worker=resources if sc.num_workers else None,
    )
    run_config = RunConfig(
        name=name,
        storage_path=storage.path,
        storage_filesystem=None if storage.is_local else storage.fs,
        failure_config=FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=cfg.storage.keep_checkpoints),
        callbacks=[RunCallback(board), *(callbacks or [])],
    )
    loop_config = {
        "config": config_to_dict(cfg),
        "dataset_info": dataset_info,
        "iters_per_epoch": iters_per_epoch,
        "board": board,
    }
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if sc.use_gpu else "gloo"),
        scaling_config=scaling,
        run_config=run_config,
        datasets=datasets,
        dataset_config=train_dataset_config(cfg.data),
    )
