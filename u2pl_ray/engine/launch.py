"""Driver-side assembly shared by `train` and `tune`: Ray start-up, storage, the TorchTrainer."""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from u2pl_ray.config import Config, config_to_dict, dump_config

log = logging.getLogger(__name__)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Attach to the Ray cluster of a submitted job or a `ray start` node, else start one in-process.

    `ray.init()` without an address attaches to a running local cluster if there is one and
    otherwise starts an embedded one, which is what a user on a laptop or a cluster node expects.
    """
    import ray

    if ray.is_initialized():
        return _single_node()
    kwargs: dict[str, Any] = {"log_to_driver": True}
    if address:
        kwargs["address"] = address
    elif not os.environ.get("RAY_ADDRESS") and num_cpus:
        kwargs["num_cpus"] = num_cpus
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    ray.init(**kwargs)
    return _single_node()


def _single_node() -> bool:
    """True on a one-node cluster without an autoscaler (a laptop, CI): there the CPU budget can be
    checked up front; a cluster that autoscales adds nodes when the workers ask for them."""
    import ray
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    if len([n for n in ray.nodes() if n.get("Alive")]) != 1:
        return False
    # The autoscaler's monitor publishes its status here (what `ray status` prints).
    return not _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)


@dataclass
class Storage:
    """Where a run's checkpoints and artefacts go: `uri` (with its client options, e.g. an S3
    endpoint) for people and for u2pl_ray.data.fs, (`fs`, `path`) for pyarrow and Ray."""

    uri: str
    fs: pafs.FileSystem
    path: str

    def join(self, *parts: str) -> Storage:
        from u2pl_ray.data.fs import join_uri

        tail = "/".join(p.strip("/") for p in parts)
        return Storage(join_uri(self.uri, *parts), self.fs, f"{self.path.rstrip('/')}/{tail}")

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def write_text(self, text: str) -> None:
        from u2pl_ray.data.fs import fs_write_atomic

        self.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
        fs_write_atomic(self.fs, self.path, text.encode(), self.uri)

    def read_text(self) -> str:
        with self.fs.open_input_stream(self.path) as src:
            return src.read().decode()

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)


def epoch_iterations(cfg: Config, info: Any, world_size: int) -> int:
    """Iterations per epoch of this run (fixed, or from the stream its method reads); a DataError when
    the split does not suit the method (a semi-supervised method on a split without unlabelled images)."""
    from u2pl_ray.data.stream import iters_per_epoch
    from u2pl_ray.method import method_class

    return iters_per_epoch(
        info,
        cfg.data,
        world_size,
        needs_unlabeled=method_class(cfg.method.name).needs_unlabeled,
        method=cfg.method.name,
        fixed=cfg.schedule.iters_per_epoch,
    )


def train_datasets(cfg: Config, info: Any, iters_per_epoch: int, world_size: int) -> dict[str, Any]:
    """The Ray Datasets the TorchTrainer splits across its workers, for the streams the method reads."""
    from u2pl_ray.data.stream import build_train_datasets
    from u2pl_ray.method import method_class

    method = method_class(cfg.method.name)
    return build_train_datasets(
        cfg.data,
        info,
        needs_unlabeled=method.needs_unlabeled,
        iters_per_epoch=iters_per_epoch,
        world_size=world_size,
        unlabeled_views=method.unlabeled_views,
    )


def resolve_storage(uri: str) -> Storage:
    from u2pl_ray.data.fs import is_local, resolve_filesystem

    fs, path = resolve_filesystem(uri)
    shown = path if is_local(uri) else uri.rstrip("/")
    return Storage(shown, fs, path.rstrip("/") or path)


def run_name(cfg: Config) -> str:
    if cfg.storage.name:
        return cfg.storage.name
    return f"{cfg.name}-{_dt.datetime.now():%Y%m%d-%H%M%S}"


def write_run_config(run: Storage, cfg: Config) -> None:
    run.join("config.yaml").write_text(dump_config(cfg))


def build_trainer(
    cfg: Config,
    *,
    name: str,
    storage: Storage,
    dataset_info: Any,
    iters_per_epoch: int,
    datasets: dict[str, Any],
    board: Any = None,
    callbacks: list[Any] | None = None,
) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from u2pl_ray.data.stream import train_dataset_config
    from u2pl_ray.engine.callbacks import RunCallback
    from u2pl_ray.engine.ray_session import train_loop_per_worker

    sc = cfg.scaling
    resources: dict[str, float] = {"CPU": sc.cpus_per_worker, **sc.resources_per_worker}
    if sc.use_gpu:
        resources["GPU"] = sc.gpus_per_worker
    # Elastic: Ray Train restarts the group with as many workers as the cluster can hold (at least
    # min_workers) and grows it again when nodes come back. Iterations per epoch stay those of
    # num_workers, so fewer workers see fewer images per epoch (see README, "Elastic training").
    elastic = sc.min_workers is not None and sc.min_workers < sc.num_workers
    scaling = ScalingConfig(
        num_workers=(sc.min_workers, sc.num_workers) if elastic else sc.num_workers,  # type: ignore[arg-type]
        use_gpu=sc.use_gpu,
        resources_per_worker=resources if sc.num_workers else None,
    )
    # Train V2's RunConfig at run time; Ray's static type is the V1 class, which lacks these keywords.
    run_config = RunConfig(  # type: ignore[call-arg]
        name=name,
        storage_path=storage.path,
        storage_filesystem=None if storage.is_local else storage.fs,
        failure_config=FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=cfg.storage.keep_checkpoints),
        callbacks=[RunCallback(board), *(callbacks or [])],  # type: ignore[list-item]
        logging_config=LoggingConfig(log_level=cfg.ray_train_log_level),
        # Spinning OpenMP threads slow small ops ~10x on CPUs shared with Ray Data tasks.
        worker_runtime_env=None if sc.use_gpu else {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}},
    )
    loop_config = {
        "config": config_to_dict(cfg),
        "dataset_info": dataset_info,
        "iters_per_epoch": iters_per_epoch,
        "board": board,
        "run_uri": storage.join(name).uri,
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
