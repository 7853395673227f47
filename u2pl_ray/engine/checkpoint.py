"""Checkpoint files: the full run state, written so that a half-written checkpoint is never used.

A checkpoint is a directory:
  state.pt        shared state (student, teacher, optimiser, scaler, memory bank, progress), rank 0
  rank_<r>.pt     per-rank state (RNG states, the method's generators, data position)
  config.yaml     the resolved config of the run
  meta.json       written last: format, iteration, metrics, and the size + sha256 of every file,
                  every rank's included

`verify_checkpoint` refuses a directory whose meta.json is missing or does not match its files, so a
crash in the middle of writing leaves that checkpoint unusable and the previous one in charge. The copy
to the run's storage keeps that order: every rank's files first, meta.json after (`upload_files`).
Everything is read with `torch.load(weights_only=True)`: nothing in a checkpoint is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "u2pl-ray/checkpoint/1"
META = "meta.json"
SHARED = "state.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the directory and what is wrong."""


def rank_file(rank: int) -> str:
    return f"rank_{rank}.pt"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_torch(obj: Any, path: Path) -> None:
    """torch.save through a temporary name, so `path` is either absent or complete."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def file_entry(path: Path) -> dict[str, Any]:
    """What the seal records of one file: its size and sha256."""
    return {"size": path.stat().st_size, "sha256": _sha256(path)}


def write_meta(directory: Path, meta: dict[str, Any], other_files: dict[str, dict[str, Any]] | None = None) -> None:
    """Seals a checkpoint directory: lists every file with its size and hash, and `other_files` (the
    other ranks' files, written in their own folders and meeting this one in storage), then writes
    meta.json. A checkpoint missing any listed file fails verification."""
    files = dict(other_files or {})
    for path in sorted(directory.iterdir()):
        if path.name == META or path.name.endswith(".tmp") or not path.is_file():
            continue
        files[path.name] = file_entry(path)
    body = {"format": FORMAT, **meta, "files": dict(sorted(files.items()))}
    tmp = directory / (META + ".tmp")
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True))
    os.replace(tmp, directory / META)


def upload_files(directory: Path, fs: Any, dest: str, *, meta: bool) -> None:
    """Copies the checkpoint's files to `dest` on the pyarrow filesystem `fs`, one at a time: all but
    meta.json, or (`meta=True`) meta.json alone. A folder copy goes in listing order, which put meta.json
    (the seal) before state.pt, so a store lost mid-upload left a sealed-looking, incomplete checkpoint."""
    from pyarrow.fs import LocalFileSystem, copy_files

    directory = Path(directory)
    if meta:
        names = [META]  # its folder exists: the rank's own files went first
    else:
        fs.create_dir(dest, recursive=True)
        names = sorted(p.name for p in directory.iterdir() if p.is_file() and p.name != META)
    for name in names:
        # One stream per file; threads are unsafe for S3 uploads (apache/arrow#32372).
        copy_files(
            str(directory / name),
            f"{dest.rstrip('/')}/{name}",
            source_filesystem=LocalFileSystem(),
            destination_filesystem=fs,
            chunk_size=64 << 20,
            use_threads=False,
        )


def checkpoint_dirs(fs: Any, folder: str) -> list[str]:
    """Paths of the `checkpoint_*` folders in `folder` on a pyarrow filesystem, oldest first (names carry
    the iteration); OSError when it cannot be listed. The one lister of a run's checkpoints."""
    from pyarrow.fs import FileSelector, FileType

    infos = fs.get_file_info(FileSelector(folder, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == FileType.Directory and i.base_name.startswith("checkpoint_"))


def verify_checkpoint(directory: str | Path) -> dict[str, Any]:
    """Returns the checkpoint's meta after checking every listed file; raises CheckpointError."""
    directory = Path(directory)
    meta_path = directory / META
    if not meta_path.is_file():
        raise CheckpointError(f"{directory} is not a complete u2pl-ray checkpoint: {META} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path} is unreadable: {exc}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{directory} is not a u2pl-ray checkpoint (format {meta.get('format')!r})")
    for name, expected in meta.get("files", {}).items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint {directory}: {name} is missing")
        if path.stat().st_size != expected["size"] or _sha256(path) != expected["sha256"]:
            raise CheckpointError(f"checkpoint {directory}: {name} is damaged (size or sha256 differ)")
    if SHARED not in meta.get("files", {}):
        raise CheckpointError(f"checkpoint {directory}: {SHARED} is missing")
    return meta


def load_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or damaged files
        raise CheckpointError(f"cannot load {path}: {type(exc).__name__}: {exc}") from None


# ---- RNG states: plain tensors and ints, so that weights_only loading accepts them ----------------


def capture_rng() -> dict[str, Any]:
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


@dataclass
class CheckpointPaths:
    directory: Path

    @property
    def shared(self) -> Path:
        return self.directory / SHARED

    def rank(self, rank: int) -> Path:
        return self.directory / rank_file(rank)
