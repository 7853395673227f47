"""`ensure_dataset`: the dataset root of a config, generating the built-in synthetic set on first use."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from u2pl_ray.data.fs import exists, is_local, join_uri, redact
from u2pl_ray.data.schema import MANIFEST_NAME

log = logging.getLogger(__name__)


def synthetic_root(cfg) -> str:
    """Where the synthetic set of `cfg` (a DataConfig) lives: cache_dir/<key of the synthetic config>."""
    from u2pl_ray.data.synthetic import synthetic_key

    return join_uri(cfg.cache_dir, synthetic_key(cfg.synthetic))


def ensure_dataset(cfg) -> str:
    """The root URI of the dataset of `cfg` (a DataConfig). For `root: null`, the synthetic set is generated
    into `cache_dir` once, keyed by its config; concurrent callers (two processes) are safe: locally a lock
    plus an atomic rename of a finished folder, remotely identical deterministic bytes with the manifest last."""
    if cfg.root is not None:
        return cfg.root
    from u2pl_ray.data.synthetic import generate_synthetic

    root = synthetic_root(cfg)
    if exists(join_uri(root, MANIFEST_NAME)):
        return root
    if not is_local(root):
        log.info("generating the synthetic dataset into %s", redact(root))
        generate_synthetic(cfg.synthetic, root, overwrite=True)
        return root
    final = Path(root.removeprefix("file://")).expanduser()
    final.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(final.parent / f".{final.name}.lock"):
        if (final / MANIFEST_NAME).exists():
            return str(final)
        tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
        log.info("generating the synthetic dataset into %s (first use)", final)
        try:
            generate_synthetic(cfg.synthetic, str(tmp), overwrite=True)
            if final.exists():  # a stale, incomplete folder (no manifest) from a killed run
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(final)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
