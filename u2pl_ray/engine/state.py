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

# The memory bank is identical on every rank (all-gathered), so it is stored once with the weights;
# the rest of the method's state (its generators) differs per rank.
SHARED_METHOD_KEYS = ("memory_bank",)


def _split_method_state(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    shared = {k: v for k, v in state.items() if k in SHARED_METHOD_KEYS}
    own = {k: v for k, v in state.items() if k not in SHARED_METHOD_KEYS}
    return shared, own


def bank_digest(method_state: dict[str, Any]) -> str | None:
    """sha256 over the memory bank's rows in logical order: equal on every rank when the all-gather
    kept the banks identical (each rank stores its digest; tests and `verify_banks` compare them)."""
    bank = method_state.get("memory_bank")
    if not bank:
        return None
    digest = hashlib.sha256()
    for rows in bank["rows"]:
        digest.update(str(tuple(rows.shape)).encode())
        digest.update(rows.contiguous().numpy().tobytes())
    return digest.hexdigest()


def tensors_digest(tensors: Any) -> str:
    """sha256 over named tensors (a state dict, or named buffers) in order."""
    digest = hashlib.sha256()
    for name, tensor in tensors:
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_state(directory: Path, c: Any, progress: Any, rank: int, cfg: Config, metrics: dict, faults: Any) -> None:
    paths = CheckpointPaths(directory)
    method_state = c.step.state_dict()
    method_shared, method_own = _split_method_state(method_state)
    stream_state = c.stream.state_dict() if hasattr(c.stream, "state_dict") else {}
    # Digests of what must be identical on every rank, stored by each rank (tests compare them).
    save_torch({"rng": capture_rng(), "method": method_own, "stream": stream_state,
                "bank_sha256": bank_digest(method_state),
                "teacher_sha256": tensors_digest(c.teacher.state_dict().items()),
                "student_buffers_sha256": tensors_digest(c.unwrapped_student.named_buffers())},
               paths.rank(rank))
    # The seal written by rank 0 lists every rank's file: a checkpoint missing one is not complete.
    entries = coll.all_gather_objects((paths.rank(rank).name, file_entry(paths.rank(rank))))
    if rank != 0:
        return
    shared = {
        "student": c.unwrapped_student.state_dict(),
        "teacher": c.teacher.state_dict(),
        "optimizer": c.optimizer.state_dict(),
        "scaler": c.scaler.state_dict() if c.scaler is not None else {},
        "method": method_shared,
        "progress": dataclasses.asdict(progress),
    }
    save_torch(shared, paths.shared)
    faults.during_checkpoint(progress.iteration, directory)
    (directory / "config.yaml").write_text(dump_config(cfg))
    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
    write_meta(directory, {
        "iteration": progress.iteration, "epoch": progress.epoch, "version": __version__,
        "metrics": numeric, "num_classes": c.num_classes, "classes": c.classes, "history": progress.history,
        "resumes": progress.resumes, "world_size": len(entries),
    }, other_files=dict(entries))


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
    _load_module(c.teacher, shared["teacher"], "teacher network", directory)
    _load_module(c.optimizer, shared["optimizer"], "optimiser", directory)
    if c.scaler is not None and shared.get("scaler"):
        c.scaler.load_state_dict(shared["scaler"])
    own_path = paths.rank(rank)
    own = load_torch(own_path) if own_path.exists() else None
    # Start from this rank's fresh state so that a checkpoint from another worker count still loads.
    method_state = {**c.step.state_dict(), **shared.get("method", {})}
    if own is not None:
        method_state.update(own.get("method", {}))
        restore_rng(own["rng"])
        if own.get("stream") and hasattr(c.stream, "load_state_dict"):
            c.stream.load_state_dict(own["stream"])
    else:
        log.warning("%s has no state for rank %d (the worker count changed?): its RNGs start afresh", directory, rank)
    try:
        c.step.load_state_dict(method_state)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {directory}: the method state does not fit this run: {exc}") from None
    fields = {f.name for f in dataclasses.fields(progress_cls)}  # type: ignore[arg-type]
    return progress_cls(**{k: v for k, v in shared["progress"].items() if k in fields})
