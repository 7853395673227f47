"""Writing and reading parquet shards of the one schema (u2pl_ray.data.schema)."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from u2pl_ray.data.errors import DataError
from u2pl_ray.data.fs import fs_write_atomic, redact, storage_error
from u2pl_ray.data.schema import SHARD_SCHEMA, PartInfo, ShardRef, check_shard_schema

# Encoded images do not compress further: store them as they are and spend no CPU on it.
_COMPRESSION = {
    "id": "snappy",
    "image": "none",
    "mask": "none",
    "height": "snappy",
    "width": "snappy",
    "split": "snappy",
}


@dataclass
class Sample:
    """One row to write. `class_pixels` (per-class pixel counts of the mask) feeds the manifest."""

    id: str
    image: bytes
    mask: bytes | None
    height: int
    width: int
    class_pixels: np.ndarray | None = None


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def table_to_parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=_COMPRESSION, use_dictionary=["split"], write_statistics=["id"])
    return sink.getvalue().to_pybytes()


class ShardWriter:
    """Rows of one part (e.g. 'splits/1_8/labeled') into shards of at most `shard_rows` rows and
    `shard_mb` MB; each shard is written atomically when full, so a reader never sees a partial one."""

    def __init__(
        self,
        fs: pafs.FileSystem,
        root_path: str,
        part_dir: str,
        split_label: str,
        *,
        shard_rows: int = 256,
        shard_mb: float = 256.0,
        num_classes: int | None = None,
        root_uri: str | None = None,
    ):
        self.fs, self.root_path, self.part_dir, self.split_label = fs, root_path, part_dir, split_label
        self.shard_rows, self.shard_bytes = int(shard_rows), int(shard_mb * 2**20)
        self.root_uri = root_uri or root_path
        self._rows: list[Sample] = []
        self._bytes = 0
        self._shards: list[ShardRef] = []
        self._pixels = np.zeros(num_classes, dtype=np.int64) if num_classes else None
        self._has_masks = False

    def add(self, sample: Sample) -> None:
        self._rows.append(sample)
        self._bytes += len(sample.image) + len(sample.mask or b"")
        if sample.class_pixels is not None and self._pixels is not None:
            self._pixels[: len(sample.class_pixels)] += sample.class_pixels[: len(self._pixels)]
            self._has_masks = True
        if len(self._rows) >= self.shard_rows or self._bytes >= self.shard_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        rows = self._rows
        table = pa.Table.from_pydict(
            {
                "id": [r.id for r in rows],
                "image": [r.image for r in rows],
                "mask": [r.mask for r in rows],
                "height": [int(r.height) for r in rows],
                "width": [int(r.width) for r in rows],
                "split": [self.split_label] * len(rows),
            },
            schema=SHARD_SCHEMA,
        )
        rel = posixpath.join(self.part_dir, shard_name(len(self._shards)))
        fs_write_atomic(
            self.fs, posixpath.join(self.root_path, rel), table_to_parquet_bytes(table), f"{self.root_uri} :: {rel}"
        )
        self._shards.append(ShardRef(rel, len(rows)))
        self._rows, self._bytes = [], 0

    def close(self) -> PartInfo:
        self._flush()
        pixels = tuple(int(v) for v in self._pixels) if self._pixels is not None and self._has_masks else None
        return PartInfo(tuple(self._shards), pixels)


# --- reading ----------------------------------------------------------------------------------------


def shard_where(root_uri: str, rel: str) -> str:
    """How a shard is named in messages: its full (redacted) URI."""
    location = root_uri.split("?", 1)[0] if "://" in root_uri else root_uri
    return redact(location.rstrip("/") + "/" + rel)


def open_shard(fs: pafs.FileSystem, root_path: str, ref: ShardRef, root_uri: str) -> pq.ParquetFile:
    """The shard opened for reading (footer read and schema checked). DataError names the shard."""
    where = shard_where(root_uri, ref.path)
    path = posixpath.join(root_path, ref.path)
    try:
        handle = fs.open_input_file(path)
    except FileNotFoundError:
        raise DataError(f"missing shard {where} (listed in the manifest; the dataset is incomplete)") from None
    except OSError as exc:
        if "not found" in str(exc).lower() or "nosuchkey" in str(exc).lower():
            raise DataError(f"missing shard {where} (listed in the manifest; the dataset is incomplete)") from None
        raise storage_error(exc, where, "open shard") from None
    try:
        pf = pq.ParquetFile(handle)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"shard {where} is not a readable parquet file: {exc}") from None
    check_shard_schema(pf.schema_arrow, where)
    if pf.metadata.num_rows != ref.rows:
        raise DataError(f"shard {where} has {pf.metadata.num_rows} rows, the manifest says {ref.rows}")
    return pf


def read_shard_rows(
    fs: pafs.FileSystem,
    root_path: str,
    ref: ShardRef,
    root_uri: str,
    rows: Sequence[int] | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """The whole shard, or the given row positions of it (in that order)."""
    pf = open_shard(fs, root_path, ref, root_uri)
    try:
        table = pf.read(columns=list(columns) if columns else None)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"shard {shard_where(root_uri, ref.path)} cannot be read: {exc}") from None
    if rows is not None:
        table = table.take(pa.array(list(rows), type=pa.int64()))
    return table


def iter_part_rows(
    fs: pafs.FileSystem, root_path: str, part: PartInfo, root_uri: str, start: int = 0, stop: int | None = None
) -> Iterator[tuple[ShardRef, int, dict]]:
    """(shard, row in shard, row dict) for global row positions [start, stop) of a part, reading only
    the shards that overlap that range."""
    stop = part.rows if stop is None else min(stop, part.rows)
    offset = 0
    for ref in part.shards:
        lo, hi = max(start - offset, 0), min(stop - offset, ref.rows)
        if lo < hi:
            table = read_shard_rows(fs, root_path, ref, root_uri, rows=range(lo, hi))
            for i, row in enumerate(table.to_pylist()):
                yield ref, lo + i, row
        offset += ref.rows
        if offset >= stop:
            break
