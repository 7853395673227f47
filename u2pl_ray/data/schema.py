"""The shard schema and the dataset manifest: the one place that says what a converted dataset holds.

Layout of a dataset root (local folder or object-store prefix):

    ROOT/manifest.json                              written last: its presence marks a complete dataset
    ROOT/val/part-00000.parquet ...                 validation rows (all labelled)
    ROOT/splits/<split>/labeled/part-*.parquet      labelled training rows of one split
    ROOT/splits/<split>/unlabeled/part-*.parquet    unlabelled training rows (mask is null)

Each split is self-contained so the stream reads exactly the rows it needs, with no id filtering; the
price is that several splits of one dataset store the training images once per split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from u2pl_ray.data.errors import DataError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
ROLES = ("labeled", "unlabeled")

SHARD_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),  # PNG or JPEG bytes, as the source had them
        pa.field("mask", pa.binary(), nullable=True),  # single-channel PNG of class ids; null = unlabelled
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("split", pa.string(), nullable=False),  # "val" or "<split>/labeled" / "<split>/unlabeled"
    ]
)
COLUMNS = tuple(SHARD_SCHEMA.names)


def check_shard_schema(schema: pa.Schema, where: str) -> None:
    """Raises DataError naming the shard when a column is missing or has another type."""
    problems = []
    for expected in SHARD_SCHEMA:
        idx = schema.get_field_index(expected.name)
        if idx < 0:
            problems.append(f"column '{expected.name}' ({expected.type}) is missing")
        elif not schema.field(idx).type.equals(expected.type):
            got = schema.field(idx).type
            large = {pa.large_binary(): pa.binary(), pa.large_string(): pa.string()}
            if large.get(got) != expected.type:  # large_* variants read identically
                problems.append(f"column '{expected.name}' is {got}, expected {expected.type}")
    if problems:
        raise DataError(
            f"shard {where} does not have the u2pl-ray shard schema (v{SCHEMA_VERSION}): " + "; ".join(problems)
        )


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class ShardRef:
    path: str  # relative to the dataset root, "/"-separated
    rows: int


@dataclass(frozen=True)
class PartInfo:
    """The shards of one part (val, or one role of one split) in their fixed order."""

    shards: tuple[ShardRef, ...] = ()
    class_pixels: tuple[int, ...] | None = None

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rows": self.rows, "shards": [{"path": s.path, "rows": s.rows} for s in self.shards]}
        if self.class_pixels is not None:
            out["class_pixels"] = list(self.class_pixels)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartInfo:
        shards = tuple(ShardRef(str(s["path"]), int(s["rows"])) for s in data.get("shards", []))
        pixels = data.get("class_pixels")
        return cls(shards, tuple(int(p) for p in pixels) if pixels is not None else None)


@dataclass(frozen=True)
class Manifest:
    name: str
    classes: tuple[ClassInfo, ...]
    val: PartInfo
    splits: dict[str, dict[str, PartInfo]]  # split -> role -> part
    ignore_index: int = 255
    schema_version: int = SCHEMA_VERSION
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def part(self, split: str, role: str) -> PartInfo:
        if split not in self.splits:
            known = ", ".join(sorted(self.splits)) or "none"
            raise DataError(f"dataset '{self.name}' has no split '{split}' (splits: {known})")
        return self.splits[split].get(role, PartInfo())

    def to_json(self) -> str:
        train_images = {s: parts_rows(p) for s, p in self.splits.items()}
        data = {
            "schema_version": self.schema_version,
            "name": self.name,
            "ignore_index": self.ignore_index,
            "classes": [{"id": c.id, "name": c.name, "color": list(c.color)} for c in self.classes],
            "counts": {"val_images": self.val.rows, "train_images_per_split": train_images},
            "val": self.val.to_json(),
            "splits": {
                s: {role: part.to_json() for role, part in roles.items()} for s, roles in sorted(self.splits.items())
            },
            "source": self.source,
        }
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        try:
            data = json.loads(text)
            version = int(data.get("schema_version", -1))
            if version != SCHEMA_VERSION:
                raise DataError(
                    f"manifest {where} has schema_version {version}; this u2pl-ray reads version "
                    f"{SCHEMA_VERSION}: convert the dataset again"
                )
            classes = tuple(
                ClassInfo(int(c["id"]), str(c["name"]), tuple(int(v) for v in c["color"]))  # type: ignore[misc]
                for c in data["classes"]
            )
            if [c.id for c in classes] != list(range(len(classes))):
                raise DataError(f"manifest {where}: class ids must be 0..C-1 in order")
            splits = {
                s: {role: PartInfo.from_json(p) for role, p in roles.items()} for s, roles in data["splits"].items()
            }
            return cls(
                name=str(data.get("name", "dataset")),
                classes=classes,
                val=PartInfo.from_json(data["val"]),
                splits=splits,
                ignore_index=int(data.get("ignore_index", 255)),
                source=dict(data.get("source", {})),
            )
        except DataError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"manifest {where} is malformed: {type(exc).__name__}: {exc}") from None


def parts_rows(roles: dict[str, PartInfo]) -> dict[str, int]:
    return {role: part.rows for role, part in roles.items()}
