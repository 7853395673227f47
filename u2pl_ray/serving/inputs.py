"""Inputs of `predict`: a folder, a single image, a text list of paths/URIs, or an object-store prefix.

Each input becomes an `InputItem(uri, rel)`: where to read it and the relative name (no suffix) its
outputs get, so a folder tree is mirrored under the output folder.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import torch

from u2pl_ray.data.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
LIST_SUFFIXES = (".txt", ".lst", ".list")


class ImageReadError(RuntimeError):
    """An input that cannot be read or decoded; the message names it."""

    def __init__(self, uri: str, problem: str):
        super().__init__(f"cannot read image {uri}: {problem}")
        self.uri = uri
        self.problem = problem


@dataclass(frozen=True)
class InputItem:
    uri: str
    rel: str  # output name relative to the output root, "/"-separated, no suffix


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _stem(rel: str) -> str:
    return posixpath.splitext(rel)[0]


def _unique(items: list[InputItem]) -> list[InputItem]:
    """Makes output names unique (two list entries a/x.png and b/x.jpg would both be 'x')."""
    seen: dict[str, int] = {}
    out = []
    for item in items:
        count = seen.get(item.rel, 0)
        seen[item.rel] = count + 1
        out.append(item if count == 0 else InputItem(item.uri, f"{item.rel}_{count}"))
    return out


def _read_list(text: str, base: str, where: str) -> list[InputItem]:
    from u2pl_ray.data.fs import is_local, join_uri, split_query

    items = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "://" in line or line.startswith("/"):
            uri = line
        elif is_local(split_query(base)[0]):
            uri = str(Path(base) / line)
        else:
            uri = join_uri(base, line)
        if not _is_image(split_query(uri)[0]):
            raise DataError(f"{where} line {number}: {line!r} is not an image ({', '.join(IMAGE_SUFFIXES)})")
        items.append(InputItem(uri, _stem(posixpath.basename(split_query(uri)[0]))))
    return items


def list_inputs(spec: str) -> list[InputItem]:
    """The images named by `spec`, in a stable (sorted) order. Raises DataError when there are none."""
    from u2pl_ray.data.fs import is_local, join_uri, read_text, resolve_filesystem, split_query, storage_error

    location, query = split_query(spec)
    if is_local(location):
        path = Path(location.removeprefix("file://")).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and _is_image(p.name))
            items = [InputItem(str(p), _stem(p.relative_to(path).as_posix())) for p in files]
        elif path.is_file() and _is_image(path.name):
            items = [InputItem(str(path), path.stem)]
        elif path.is_file():
            items = _read_list(path.read_text(), str(path.parent), str(path))
        else:
            raise DataError(f"input {spec} does not exist")
    else:
        fs, root = resolve_filesystem(spec)
        try:
            info = fs.get_file_info(root)
            if info.type == pafs.FileType.File:
                if _is_image(root):
                    items = [InputItem(spec, _stem(posixpath.basename(root)))]
                else:
                    parent = location.rsplit("/", 1)[0] + (f"?{query}" if query else "")
                    items = _read_list(read_text(spec), parent, spec)
            else:
                infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
                files = sorted(i.path for i in infos if i.type == pafs.FileType.File and _is_image(i.path))
                items = [
                    InputItem(join_uri(spec, posixpath.relpath(f, root)), _stem(posixpath.relpath(f, root)))
                    for f in files
                ]
        except OSError as exc:
            raise storage_error(exc, spec, "list") from None
    if not items:
        raise DataError(f"no images found in {spec} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return _unique(items)


def read_image(uri: str) -> torch.Tensor:
    """uint8 [3, H, W] RGB of an image file or object. ImageReadError names the input on any failure."""
    from u2pl_ray.data.codec import decode_rgb
    from u2pl_ray.data.fs import read_bytes

    try:
        data = read_bytes(uri)
        return decode_rgb(data, uri)
    except DataError as exc:
        raise ImageReadError(uri, str(exc).removeprefix(f"bad sample {uri}: ")) from None
