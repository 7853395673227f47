"""The body of the Ray Data read tasks: read shards (whole, or the rows of plan segments in plan order),
and decode them too when `spec` is given (data.decode: ray). Imports neither torch nor Ray, so a read
task that only moves bytes starts fast."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from u2pl_ray.data.errors import DataError
from u2pl_ray.data.fs import resolve_filesystem, storage_error
from u2pl_ray.data.shards import shard_where

OUTPUT_ROWS = 32


def read_segments(
    batch: dict[str, np.ndarray], root: str, columns: list[str], spec: Any, epoch: int | None, stream: int
) -> Iterator[Any]:
    fs, root_path = resolve_filesystem(root)
    pieces, indices, positions = [], [], []
    offset = 0
    for text in batch["segment"]:
        seg = json.loads(str(text))
        starts = []
        for rel, rows in zip(seg["paths"], seg["rows"]):
            table = _read_shard(fs, root_path, root, rel, rows, columns)
            pieces.append(table.append_column("where", pa.array([shard_where(root, rel)] * table.num_rows)))
            starts.append(offset)
            offset += table.num_rows
        if "entries" in seg:  # a plan segment: these rows, in this order
            indices.extend(starts[local] + row for local, row in seg["entries"])
            positions.extend(seg["positions"])
        else:  # whole shards
            indices.extend(range(starts[0], offset))
    if not pieces:
        return
    raw = pa.concat_tables(pieces).take(pa.array(indices, type=pa.int64()))
    if positions:
        raw = raw.append_column("position", pa.array(positions, type=pa.int64()))
    # Small output blocks: the consumer gets its first rows after OUTPUT_ROWS decodes, not a whole shard's.
    for start in range(0, raw.num_rows, OUTPUT_ROWS):
        piece = raw.slice(start, OUTPUT_ROWS)
        if spec is None:
            yield piece  # bytes go to the training worker, which decodes them
            continue
        from u2pl_ray.data.rows import decode_rows_to_numpy  # torch: only where decoding runs

        out = {name: piece.column(name).to_numpy(zero_copy_only=False) for name in piece.column_names}
        yield decode_rows_to_numpy(out, spec, epoch=epoch, stream=stream, where_column="where")


def _read_shard(fs: Any, root_path: str, root: str, rel: str, rows: int, columns: list[str]) -> pa.Table:
    where = shard_where(root, rel)
    try:
        table = pq.read_table(posixpath.join(root_path, rel), filesystem=fs, columns=columns)
    except FileNotFoundError:
        raise DataError(f"missing shard {where} (listed in the manifest)") from None
    except (pa.ArrowInvalid, KeyError) as exc:
        raise DataError(f"shard {where} cannot be read as a u2pl-ray shard: {exc}") from None
    except OSError as exc:
        raise storage_error(exc, where, "read shard") from None
    if table.num_rows != rows:
        raise DataError(f"shard {where} has {table.num_rows} rows, the manifest says {rows}")
    return table
