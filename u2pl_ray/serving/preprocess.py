"""What a trained model expects and returns, read from its checkpoint: normalisation, classes, colours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from u2pl_ray.viz.palette import ClassTable, class_table


@dataclass(frozen=True)
class Preprocessing:
    mean: tuple[float, float, float]  # in 0-255 units, RGB
    std: tuple[float, float, float]
    classes: ClassTable
    ignore_index: int = 255

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    @classmethod
    def from_loaded(cls, loaded: Any) -> Preprocessing:
        """From `engine.artifacts.load_trained_model(...)`: the run config's mean/std and the classes
        of the checkpoint's meta.json (VOC colours when it has none)."""
        cfg, meta = loaded.cfg, loaded.meta
        num_classes = int(cfg.model.num_classes or meta.get("num_classes") or 0)
        if num_classes < 2:
            raise ValueError(f"checkpoint {loaded.source} does not say how many classes its model has")
        return cls(
            mean=tuple(float(v) for v in cfg.data.mean),  # type: ignore[arg-type]
            std=tuple(float(v) for v in cfg.data.std),  # type: ignore[arg-type]
            classes=class_table(meta.get("classes"), num_classes),
            ignore_index=int(cfg.data.ignore_index),
        )

    def normalise(self, image: Tensor) -> Tensor:
        """uint8 (or 0-255 float) [3,H,W] or [B,3,H,W] RGB -> float32 [B,3,H,W], (x - mean) / std."""
        if image.dim() == 3:
            image = image.unsqueeze(0)
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"expected an RGB image [3,H,W] or [B,3,H,W], given shape {tuple(image.shape)}")
        mean = torch.tensor(self.mean, dtype=torch.float32, device=image.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=image.device).view(1, 3, 1, 1)
        return (image.float() - mean) / std

    def to_json(self) -> dict[str, Any]:
        return {
            "color_order": "RGB",
            "layout": "NCHW",
            "dtype": "float32",
            "value_range": "0-255 before normalisation",
            "normalise": "x = (pixel - mean) / std, per channel",
            "mean": list(self.mean),
            "std": list(self.std),
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "classes": self.classes.to_json(),
            "class_source": self.classes.source,
        }
