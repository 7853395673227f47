"""A trained model as a function from an RGB image to class ids, and the files `predict` writes for it:
a class-id PNG (paletted: the values are the class ids, viewers show the class colours) and an overlay."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from u2pl_ray.engine.inference import InferenceSpec, predict_logits
from u2pl_ray.serving.inputs import ImageReadError, InputItem, read_image
from u2pl_ray.serving.preprocess import Preprocessing
from u2pl_ray.viz.canvas import png_bytes
from u2pl_ray.viz.palette import overlay


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Segmenter:
    model: nn.Module
    prep: Preprocessing
    spec: InferenceSpec
    device: torch.device
    source: str = ""
    which: str = ""
    alpha: float = 0.5  # overlay opacity of the class colours

    @classmethod
    def from_checkpoint(
        cls,
        uri: str,
        which: str = "auto",
        *,
        mode: str = "whole",
        crop_size: int | None = None,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        device: str = "auto",
        alpha: float = 0.5,
    ) -> Segmenter:
        from u2pl_ray.engine.artifacts import load_trained_model

        if mode not in ("whole", "slide"):
            raise ValueError(f"prediction covers the whole image: mode must be 'whole' or 'slide', given {mode!r}")
        loaded = load_trained_model(uri, which=which)  # type: ignore[arg-type]
        dev = pick_device(device)
        spec = InferenceSpec(
            mode=mode,  # type: ignore[arg-type]
            crop_size=int(crop_size or loaded.cfg.eval.crop_size or loaded.cfg.data.crop_size),
            stride_ratio=loaded.cfg.eval.stride_ratio,
            scales=tuple(float(s) for s in scales),
            flip=flip,
        )
        return cls(
            loaded.model.to(dev).eval(),
            Preprocessing.from_loaded(loaded),
            spec,
            dev,
            source=loaded.source,
            which=loaded.which,
            alpha=alpha,
        )

    @torch.no_grad()
    def logits(self, image: Tensor) -> Tensor:
        """float32 [1, C, H, W] logits of one uint8 [3, H, W] image."""
        x = self.prep.normalise(image.to(self.device))
        logits, _ = predict_logits(self.model, x, None, self.spec, self.prep.num_classes)
        return logits

    def predict(self, image: Tensor) -> np.ndarray:
        """uint8 [H, W] class ids of one uint8 [3, H, W] RGB image."""
        if self.prep.num_classes > 256:
            raise ValueError(f"{self.prep.num_classes} classes do not fit the uint8 class-id PNGs")
        return self.logits(image).argmax(1)[0].to(torch.uint8).cpu().numpy()

    def predict_to(self, item: InputItem, out_uri: str) -> dict[str, Any]:
        """Reads one input, writes OUT/masks/<rel>.png and OUT/overlays/<rel>.png, returns a record.
        A failure is returned as a record naming the input (ok False), never raised, so one bad file
        does not cost the other outputs."""
        from u2pl_ray.data.fs import join_uri, write_bytes_atomic

        try:
            image = read_image(item.uri)
            ids = self.predict(image)
            mask_uri = join_uri(out_uri, "masks", item.rel + ".png")
            overlay_uri = join_uri(out_uri, "overlays", item.rel + ".png")
            palette = self.prep.classes.palette(self.prep.ignore_index)
            rgb = image.permute(1, 2, 0).numpy()
            write_bytes_atomic(mask_uri, png_bytes(ids, palette))
            write_bytes_atomic(overlay_uri, png_bytes(overlay(rgb, ids, palette, self.alpha, ignore_index=None)))
        except ImageReadError as exc:
            return {"input": item.uri, "ok": False, "error": str(exc)}
        except Exception as exc:  # a write or model failure on this input; the message names it
            return {"input": item.uri, "ok": False, "error": f"{item.uri}: {type(exc).__name__}: {exc}"}
        return {
            "input": item.uri,
            "ok": True,
            "mask": mask_uri,
            "overlay": overlay_uri,
            "height": int(ids.shape[0]),
            "width": int(ids.shape[1]),
        }
