"""Object sources of the synthetic benchmark. An object is (alpha, texture), two float arrays in [0, 1]:
alpha is its silhouette (anti-aliased), texture its inner grey pattern. Colour is added later and drawn
independently of the class, so only shape and pattern tell the class.

- Fashion-MNIST items (idx files, train objects from the train file, val objects from t10k);
- procedural shapes with a class-specific inner pattern (works with pip packages alone).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image
from scipy import ndimage

# Fashion-MNIST labels in the order classes are taken (the most distinct silhouettes first).
FMNIST_ORDER = (1, 8, 5, 0, 9, 3, 7, 2, 4, 6)
FMNIST_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
SHAPES = ("disk", "square", "triangle", "cross", "ring", "star", "diamond", "hexagon", "crescent", "ell")
PATTERNS = ("hstripes", "dots", "checker", "vstripes", "rings", "diagonal", "solid", "grid", "waves", "noise")


class ObjectSource(Protocol):
    class_names: tuple[str, ...]

    def draw(self, cls: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """alpha, texture: float32 [size, size] in [0, 1]."""


def fashion_mnist_available(folder: str | None) -> bool:
    if not folder:
        return False
    d = Path(folder)
    return all(
        (d / f"{p}-{k}-idx{n}-ubyte.gz").exists() or (d / f"{p}-{k}-idx{n}-ubyte").exists()
        for p in ("train", "t10k")
        for k, n in (("images", 3), ("labels", 1))
    )


def _read_idx(path: Path) -> np.ndarray:
    gz = path.with_name(path.name + ".gz")
    raw = gzip.open(gz, "rb").read() if gz.exists() else path.read_bytes()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


class FashionMNISTObjects:
    """Items of the first `num_classes` Fashion-MNIST labels (FMNIST_ORDER); `train` picks the file."""

    def __init__(self, folder: str, num_classes: int, train: bool):
        prefix = "train" if train else "t10k"
        images = _read_idx(Path(folder) / f"{prefix}-images-idx3-ubyte")
        labels = _read_idx(Path(folder) / f"{prefix}-labels-idx1-ubyte")
        chosen = FMNIST_ORDER[:num_classes]
        self.class_names = tuple(FMNIST_NAMES[c] for c in chosen)
        self._items = [images[labels == c] for c in chosen]

    def draw(self, cls: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        items = self._items[cls]
        item = items[int(rng.integers(len(items)))]
        angle = float(rng.uniform(-20, 20))
        img = Image.fromarray(item).rotate(angle, resample=Image.BILINEAR, expand=True)
        img = img.resize((size, size), Image.BILINEAR)
        grey = np.asarray(img, dtype=np.float32) / 255.0
        # Silhouette: the item's non-black pixels with holes filled (dark parts of a garment stay inside).
        solid = ndimage.binary_fill_holes(grey > 0.04)
        alpha = ndimage.gaussian_filter(solid.astype(np.float32), 0.6).clip(0, 1)
        texture = (grey - grey[solid].min(initial=0.0)) / max(float(np.ptp(grey[solid])) if solid.any() else 1.0, 1e-3)
        return alpha, texture.clip(0, 1)


class ProceduralObjects:
    """Class k = shape SHAPES[k] filled with pattern PATTERNS[k]; rotation, scale and phase vary."""

    def __init__(self, num_classes: int):
        self.class_names = tuple(f"{SHAPES[k]}-{PATTERNS[k]}" for k in range(num_classes))

    def draw(self, cls: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        ss = 2  # supersampling for smooth edges
        n = size * ss
        yy, xx = (np.mgrid[0:n, 0:n].astype(np.float32) + 0.5) / n * 2 - 1  # [-1, 1]
        angle = rng.uniform(0, 2 * np.pi)
        aspect = rng.uniform(0.8, 1.25)
        ca, sa = np.cos(angle), np.sin(angle)
        u = (ca * xx + sa * yy) * aspect
        v = (-sa * xx + ca * yy) / aspect
        inside = _shape(SHAPES[cls], u, v)
        alpha = inside.astype(np.float32).reshape(size, ss, size, ss).mean(axis=(1, 3))
        texture = _pattern(PATTERNS[cls], u, v, rng).reshape(size, ss, size, ss).mean(axis=(1, 3))
        return alpha, texture.astype(np.float32)


def _shape(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    if name == "disk":
        return r < 0.85
    if name == "square":
        return np.maximum(abs(u), abs(v)) < 0.7
    if name == "triangle":
        return (v > -0.6) & (abs(u) < (0.9 - v) * 0.62)
    if name == "cross":
        return ((abs(u) < 0.28) & (abs(v) < 0.85)) | ((abs(v) < 0.28) & (abs(u) < 0.85))
    if name == "ring":
        return (r < 0.9) & (r > 0.5)
    if name == "star":
        return r < 0.5 + 0.38 * np.cos(5 * theta) ** 2
    if name == "diamond":
        return abs(u) + abs(v) < 0.9
    if name == "hexagon":
        q = np.maximum(abs(u) * 0.866 + abs(v) * 0.5, abs(v))
        return q < 0.8
    if name == "crescent":
        return (r < 0.85) & (np.hypot(u - 0.4, v) > 0.6)
    if name == "ell":
        return ((abs(u + 0.45) < 0.25) & (abs(v) < 0.85)) | ((abs(v - 0.6) < 0.25) & (abs(u) < 0.7))
    raise ValueError(name)


def _pattern(name: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    freq = rng.uniform(3.5, 5.0)
    phase = rng.uniform(0, 2 * np.pi)
    if name == "hstripes":
        return (np.sin(v * freq * np.pi + phase) > 0).astype(np.float32)
    if name == "vstripes":
        return (np.sin(u * freq * np.pi + phase) > 0).astype(np.float32)
    if name == "diagonal":
        return (np.sin((u + v) * freq * np.pi * 0.7 + phase) > 0).astype(np.float32)
    if name == "checker":
        return ((np.sin(u * freq * np.pi + phase) > 0) ^ (np.sin(v * freq * np.pi + phase) > 0)).astype(np.float32)
    if name == "dots":
        return ((np.sin(u * freq * np.pi + phase) * np.sin(v * freq * np.pi + phase)) > 0.45).astype(np.float32)
    if name == "rings":
        return (np.sin(np.hypot(u, v) * freq * 2 * np.pi + phase) > 0).astype(np.float32)
    if name == "solid":
        return np.full_like(u, 0.85)
    if name == "grid":
        return ((abs(np.sin(u * freq * np.pi + phase)) < 0.3) | (abs(np.sin(v * freq * np.pi + phase)) < 0.3)).astype(
            np.float32
        )
    if name == "waves":
        return (np.sin(u * freq * np.pi + 2 * np.sin(v * 3 + phase)) > 0).astype(np.float32)
    if name == "noise":
        return rng.random(u.shape).astype(np.float32)
    raise ValueError(name)


def object_source(num_classes: int, fashion_mnist_dir: str | None, train: bool, kind: str = "auto") -> ObjectSource:
    if kind == "fashion_mnist" or (kind == "auto" and fashion_mnist_available(fashion_mnist_dir)):
        if not fashion_mnist_available(fashion_mnist_dir):
            raise FileNotFoundError(f"Fashion-MNIST idx files not found in {fashion_mnist_dir}")
        return FashionMNISTObjects(str(fashion_mnist_dir), num_classes, train)
    return ProceduralObjects(num_classes)
