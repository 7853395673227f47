"""Finding and opening a trained model: a checkpoint folder, or a run folder (its best or newest
checkpoint), local or in object storage. Used by evaluate, predict, export and report."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow.fs as pafs

from u2pl_ray.config import Config, build_config, load_yaml
from u2pl_ray.engine.checkpoint import META, SHARED, CheckpointError, checkpoint_dirs, load_torch, verify_checkpoint

Which = Literal["teacher", "student", "auto"]


@dataclass
class LoadedModel:
    model: Any
    cfg: Config
    meta: dict[str, Any]
    which: str
    source: str


def _storage(uri: str):
    from u2pl_ray.engine.launch import resolve_storage

    return resolve_storage(uri)


def _keep_options(resolved: str, original: str) -> str:
    """Puts the client options of `original` (s3://b/p?endpoint_override=...) back on a resolved URI:
    Storage.uri drops them, and without them the next open goes to the default endpoint."""
    from u2pl_ray.data.fs import split_query

    _, query = split_query(original)
    return f"{resolved}?{query}" if query else resolved


def resolve_checkpoint_uri(uri: str, prefer: Literal["best", "latest"] = "best") -> str:
    """A checkpoint folder is returned as is; a run folder resolves to its best (best.json) or newest
    `checkpoint_*` folder."""
    root = _storage(uri)
    if root.join(META).exists():
        return _keep_options(root.uri, uri)
    pointer = root.join("best.json")
    if prefer == "best" and pointer.exists():
        return _keep_options(root.join(json.loads(pointer.read_text())["checkpoint"]).uri, uri)
    names = [path.rsplit("/", 1)[-1] for path in checkpoint_dirs(root.fs, root.path)]
    if not names:
        raise CheckpointError(f"{uri} is neither a u2pl-ray checkpoint nor a run folder with checkpoints")
    return _keep_options(root.join(names[-1]).uri, uri)


@contextmanager
def local_checkpoint(uri: str) -> Iterator[Path]:
    """The checkpoint as a verified local folder (downloaded to a temporary one from object storage)."""
    resolved = resolve_checkpoint_uri(uri)
    src = _storage(resolved)
    if src.is_local:
        verify_checkpoint(src.path)
        yield Path(src.path)
        return
    with tempfile.TemporaryDirectory(prefix="u2pl-ckpt-") as tmp:
        pafs.copy_files(src.path, tmp, source_filesystem=src.fs, destination_filesystem=pafs.LocalFileSystem())
        verify_checkpoint(tmp)
        yield Path(tmp)


def load_trained_model(uri: str, which: Which = "auto", map_location: str = "cpu") -> LoadedModel:
    """Builds the network of a checkpoint's config and loads the teacher's or the student's weights.

    `auto` takes the model the run's method selected at its last validation: the teacher once a
    method with one has handed over to it (U2PL: after the warm-up, as the official code), else the student.
    """
    from u2pl_ray.model import build_model

    with local_checkpoint(uri) as directory:
        meta = json.loads((directory / META).read_text())
        config_path = directory / "config.yaml"
        if not config_path.exists():
            raise CheckpointError(f"checkpoint {uri} has no config.yaml")
        cfg = build_config(load_yaml(config_path.read_text()), source=f"{uri}/config.yaml")
        state = load_torch(directory / SHARED)
    if which == "auto":
        from u2pl_ray.method import method_class

        selected = method_class(cfg.method.name).teacher_selected(cfg.method, int(meta.get("epoch", 0)))
        which = "teacher" if selected else "student"
    if which not in state:
        raise CheckpointError(f"checkpoint {uri} holds no '{which}' weights")
    model_cfg = cfg.model.model_copy(update={"pretrained": None})  # the checkpoint has every weight
    model = build_model(model_cfg, cfg.model.num_classes or int(meta.get("num_classes") or 0) or None)
    try:
        model.load_state_dict(state[which])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {uri}: the {which} weights do not fit its own config: {exc}") from None
    model.eval()
    return LoadedModel(model=model.to(map_location), cfg=cfg, meta=meta, which=which, source=uri)
