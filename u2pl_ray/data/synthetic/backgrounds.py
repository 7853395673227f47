"""Backgrounds of the synthetic benchmark: crops of real photos and textures bundled with scikit-image
(no download). Train and val draw from disjoint image sets."""

from __future__ import annotations

import numpy as np
from PIL import Image

TRAIN_IMAGES = ("astronaut", "coffee", "chelsea", "brick", "grass", "camera")
VAL_IMAGES = ("rocket", "gravel", "moon", "coins", "cell", "hubble_deep_field")


class Backgrounds:
    def __init__(self, train: bool):
        import skimage.data

        names = TRAIN_IMAGES if train else VAL_IMAGES
        self.names = names
        self._images = []
        for name in names:
            img = np.asarray(getattr(skimage.data, name)())
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=2)
            img = np.ascontiguousarray(img[..., :3], dtype=np.uint8)
            grey = bool(np.all(img[..., 0] == img[..., 1]) and np.all(img[..., 1] == img[..., 2]))
            self._images.append((img, grey))

    def draw(self, size: int, rng: np.random.Generator) -> np.ndarray:
        """A random crop (random scale, flip, colour tint for grey sources) as uint8 [size, size, 3]."""
        img, grey = self._images[int(rng.integers(len(self._images)))]
        h, w = img.shape[:2]
        side = int(min(h, w) * rng.uniform(0.25, 0.9))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(img[top : top + side, left : left + side]).resize((size, size), Image.BILINEAR)
        out = np.asarray(crop, dtype=np.float32)
        if rng.random() < 0.5:
            out = out[:, ::-1]
        tint = rng.uniform(0.6, 1.2, size=3) if grey else rng.uniform(0.85, 1.15, size=3)
        out = out * tint * rng.uniform(0.7, 1.1)
        return out.clip(0, 255).astype(np.uint8)
