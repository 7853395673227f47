"""Encoding and decoding of shard rows, with the checks that turn bad input into named errors.

Images and masks stay uint8 from here to the training device (normalisation happens there).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image

from u2pl_ray.data.errors import BadSampleError

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class SampleChecks:
    """What a decoded sample must satisfy: class ids in [0, num_classes) or == ignore_index."""

    num_classes: int
    ignore_index: int = 255


def _as_tensor(data: bytes | memoryview | np.ndarray) -> torch.Tensor:
    if isinstance(data, np.ndarray):
        return torch.from_numpy(np.array(data, dtype=np.uint8))
    # A writable copy (cheap next to the decode): torch warns on read-only buffers, and silencing that
    # with warnings.catch_warnings is not thread-safe (decoding runs in threads).
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_rgb(data: bytes, where: str) -> torch.Tensor:
    """PNG/JPEG bytes -> uint8 [3, H, W]. BadSampleError naming `where` when they do not decode."""
    if data is None or len(data) == 0:
        raise BadSampleError(where, "image bytes are empty")
    try:
        return decode_image(_as_tensor(data), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as exc:
        raise BadSampleError(where, f"image does not decode ({_short(exc)})") from None


def decode_mask(data: bytes, where: str) -> torch.Tensor:
    """Single-channel 8-bit PNG of class ids -> uint8 [H, W]."""
    if data is None or len(data) == 0:
        raise BadSampleError(where, "mask bytes are empty")
    try:
        mask = decode_image(_as_tensor(data), mode=ImageReadMode.UNCHANGED)
    except (RuntimeError, ValueError) as exc:
        raise BadSampleError(where, f"mask does not decode ({_short(exc)})") from None
    if mask.dtype != torch.uint8 or mask.shape[0] != 1:
        raise BadSampleError(
            where,
            f"mask must be a single-channel 8-bit PNG of class ids, got {mask.shape[0]} channel(s) of {mask.dtype}",
        )
    return mask[0]


def check_sample(
    image: torch.Tensor,
    mask: torch.Tensor | None,
    height: int | None,
    width: int | None,
    checks: SampleChecks,
    where: str,
) -> None:
    h, w = int(image.shape[-2]), int(image.shape[-1])
    if height is not None and width is not None and (h, w) != (int(height), int(width)):
        raise BadSampleError(where, f"image is {h}x{w} (HxW) but the row says {height}x{width}")
    if mask is None:
        return
    if tuple(mask.shape) != (h, w):
        raise BadSampleError(where, f"mask is {mask.shape[0]}x{mask.shape[1]} but the image is {h}x{w} (HxW)")
    counts = torch.bincount(mask.reshape(-1), minlength=256)  # one pass; cheaper than compare + any
    counts[checks.ignore_index] = 0
    if bool(counts[checks.num_classes :].any()):
        values = (torch.nonzero(counts[checks.num_classes :])[:8, 0] + checks.num_classes).tolist()
        raise BadSampleError(
            where, f"mask has class ids {values} outside 0..{checks.num_classes - 1} (ignore = {checks.ignore_index})"
        )


def decode_sample(
    image: bytes, mask: bytes | None, height: int | None, width: int | None, checks: SampleChecks, where: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    img = decode_rgb(image, where)
    msk = decode_mask(mask, where) if mask is not None else None
    check_sample(img, msk, height, width, checks, where)
    return img, msk


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


# --- encoding (converters) ------------------------------------------------------------------------


def image_format(data: bytes) -> str | None:
    if data[:3] == JPEG_MAGIC:
        return "jpeg"
    if data[:8] == PNG_MAGIC:
        return "png"
    return None


def encode_png(array: np.ndarray) -> bytes:
    """uint8 HxW (class ids) or HxWx3 array -> PNG bytes (PIL, so the file is a plain L/RGB PNG)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def encode_jpeg(array: np.ndarray, quality: int = 95) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
