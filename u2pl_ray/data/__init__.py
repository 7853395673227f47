"""Data layer: shard schema and manifest, filesystems, converters, the synthetic benchmark, the Ray Data
stream. Importing it does not import Ray (workers and converters that do not need it stay light)."""

from u2pl_ray.data.cache import ensure_dataset
from u2pl_ray.data.errors import BadSampleError, DataError
from u2pl_ray.data.fs import redact, resolve_filesystem
from u2pl_ray.data.info import DatasetInfo, iters_per_epoch, load_dataset_info

__all__ = [
    "BadSampleError",
    "DataError",
    "DatasetInfo",
    "ensure_dataset",
    "iters_per_epoch",
    "load_dataset_info",
    "redact",
    "resolve_filesystem",
]
