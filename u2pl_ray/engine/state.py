"""save_state / load_state: everything a restart needs, in the checkpoint layout of engine.checkpoint."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Any, TypeVar

import torch

from u2pl_ray import __version__
from u2pl_ray.config import Config, dump_config
from u2pl_ray.engine import collectives as coll
from u2pl_ray.engine.checkpoint import (
    CheckpointError,
    CheckpointPaths,
    capture_rng,
    file_entry,
    load_torch,
    restore_rng,
    save_torch,
    verify_checkpoint,
    write_meta,
)

log = logging.getLogger(__name__)
P = TypeVar("P")


def _split_method_state(state: dict[str, Any], shared_keys: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The method's state identical on every rank (e.g. U2PL's all-gathered memory bank: stored once with
    the weights) and the rest (its generators: per rank)."""
    shared = {k: v for k, v in state.items() if k in shared_keys}
    own = {k: v for k, v in state.items() if k not in shared_keys}
    return shared, own


def state_digest(value: Any) -> str | None:
    """sha256 over nested dicts / lists of tensors and plain values, in a fixed order: equal on every
    rank when their rank-shared state is (each rank stores the digest of its own; tests compare them)."""
    if not value:
        return None
    digest = hashlib.sha256()

    def walk(node: Any) -> None:
        if isinstance(node, torch.Tensor):
            digest.update(str((tuple(node.shape), str(node.dtype))).encode())
            digest.update(node.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(node, dict):
            for key in sorted(node, key=str):
                digest.update(str(key).encode())
                walk(node[key])
        elif isinstance(node, (list, tuple)):
            for item in node:
                walk(item)
        else:
            digest.update(repr(node).encode())

    walk(value)
    return digest.hexdigest()


def save_state(directory: Path, c: Any, progress: Any, rank: int, cfg: Config, metrics: dict, faults: Any) -> None:
    paths = CheckpointPaths(directory)
    method_shared, method_own = _split_method_state(c.method.state_dict(), type(c.method).rank_shared_state)
    stream_state = c.stream.state_dict() if hasattr(c.stream, "state_dict") else {}
    # Digests of what must be identical on every rank, stored by each rank (tests compare them).
    save_torch(
        {
            "rng": capture_rng(),
            "method": method_own,
            "stream": stream_state,
            "shared_sha256": state_digest(method_shared),
            "teacher_sha256": state_digest(c.teacher.state_dict()) if c.teacher is not None else None,
            "student_buffers_sha256": state_digest(dict(c.unwrapped_student.named_buffers())),
        },
        paths.rank(rank),
    )
    # The seal written by rank 0 lists every rank's file: a checkpoint missing one is not complete.
    entries = coll.all_gather_objects((paths.rank(rank).name, file_entry(paths.rank(rank))))
    if rank != 0:
        return
    shared = {
        "student": c.unwrapped_student.state_dict(),
        "teacher": c.teacher.state_dict() if c.teacher is not None else {},
        "optimizer": c.optimizer.state_dict(),
        "scaler": c.scaler.state_dict() if c.scaler is not None else {},
        "method": method_shared,
        "progress": dataclasses.asdict(progress),
    }
    save_torch(shared, paths.shared)
    faults.during_checkpoint(progress.iteration, directory)
    (directory / "config.yaml").write_text(dump_config(cfg))
    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
    write_meta(
        directory,
        {
            "iteration": progress.iteration,
            "epoch": progress.epoch,
            "version": __version__,
            "metrics": numeric,
            "num_classes": c.num_classes,
            "classes": c.classes,
            "history": progress.history,
            "resumes": progress.resumes,
            "world_size": len(entries),
        },
        other_files=dict(entries),
    )


def _load_module(module: Any, state: dict, what: str, directory: Path) -> None:
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise CheckpointError(
            f"checkpoint {directory} does not fit this run's {what} (a different model or config?): {first}"
        ) from None


def load_state(directory: Path, c: Any, rank: int, progress_cls: type[P]) -> P:
    directory = Path(directory)
    verify_checkpoint(directory)
    paths = CheckpointPaths(directory)
    shared = load_torch(paths.shared)
    for key in ("student", "teacher", "optimizer", "progress"):
        if key not in shared:
            raise CheckpointError(f"checkpoint {directory}: {paths.shared.name} has no '{key}' entry")
    _load_module(c.unwrapped_student, shared["student"], "student network", directory)
    if c.teacher is not None:
        _load_module(c.teacher, shared["teacher"], "teacher network", directory)
    _load_module(c.optimizer, shared["optimizer"], "optimiser", directory)
    if c.scaler is not None and shared.get("scaler"):
        c.scaler.load_state_dict(shared["scaler"])
    own_path = paths.rank(rank)
    own = load_torch(own_path) if own_path.exists() else None
    # Start from this rank's fresh state so that a checkpoint from another worker count still loads.
    method_state = {**c.method.state_dict(), **shared.get("method", {})}
    if own is not None:
        method_state.update(own.get("method", {}))
        restore_rng(own["rng"])
        if own.get("stream") and hasattr(c.stream, "load_state_dict"):
            c.stream.load_state_dict(own["stream"])
    else:
        log.warning("%s has no state for rank %d (the worker count changed?): its RNGs start afresh", directory, rank)
    try:
        c.method.load_state_dict(method_state)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {directory}: the method state does not fit this run: {exc}") from None
    fields = {f.name for f in dataclasses.fields(progress_cls)}  # type: ignore[arg-type]
    return progress_cls(**{k: v for k, v in shared["progress"].items() if k in fields})
