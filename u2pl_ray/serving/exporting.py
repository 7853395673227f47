"""Exporting a trained model to ONNX or TorchScript, with proof that the exported file computes what the
eager model computes.

The exported graph takes a normalised float32 image [B, 3, H, W] (see the JSON written next to it) and
returns class logits [B, C, H, W] at the input resolution: the network's stride-4 logits upsampled
bilinearly with align_corners=True, as in training and evaluation. Batch, height and width are free.
"""

from __future__ import annotations

import io
import json
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from u2pl_ray.serving.preprocess import Preprocessing

Format = Literal["onnx", "torchscript"]
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
EXPORT_FORMAT = "u2pl-ray/export/1"
RTOL, ATOL = 1e-3, 1e-4  # |exported - eager| <= ATOL + RTOL * |eager|, elementwise (torch.testing semantics)
OPSET = 17


class ExportCheckError(RuntimeError):
    """The exported model's output differs from the eager model's beyond the tolerance."""


class LogitsAtInputSize(nn.Module):
    """The network's `pred` logits upsampled to the input size: one tensor out, for export."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        out = self.model(image)
        logits = out["pred"] if isinstance(out, dict) else out
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=True)


@dataclass
class CheckCase:
    shape: list[int]
    max_abs_diff: float
    worst_excess: float  # max of |diff| - (atol + rtol |eager|); <= 0 within the tolerance
    argmax_agreement: float

    @property
    def ok(self) -> bool:
        return self.worst_excess <= 0


@dataclass
class ExportResult:
    model_uri: str
    json_uri: str
    format: str
    cases: list[CheckCase] = field(default_factory=list)
    sidecar: dict[str, Any] = field(default_factory=dict)


def check_inputs(prep: Preprocessing, height: int, width: int, seed: int = 0) -> list[Tensor]:
    """Two normalised inputs from random uint8 images: the export size, and a batch of 2 at another size
    (which shows that the spatial and batch axes are really free)."""
    gen = torch.Generator().manual_seed(seed)
    other = (height + max(8, height // 3) + 1, width + max(8, width // 5) + 3)
    images = [
        torch.randint(0, 256, (1, 3, height, width), generator=gen, dtype=torch.uint8),
        torch.randint(0, 256, (2, 3, *other), generator=gen, dtype=torch.uint8),
    ]
    return [prep.normalise(image) for image in images]


def _export_bytes(wrapper: nn.Module, example: Tensor, fmt: Format) -> bytes:
    with tempfile.TemporaryDirectory(prefix="u2pl-export-") as tmp:
        path = Path(tmp) / f"model{SUFFIX[fmt]}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter; the check below is the proof
            if fmt == "onnx":
                axes = {0: "batch", 2: "height", 3: "width"}
                torch.onnx.export(
                    wrapper,
                    (example,),
                    str(path),
                    dynamo=False,
                    input_names=["image"],
                    output_names=["logits"],
                    dynamic_axes={"image": axes, "logits": axes},
                    opset_version=OPSET,
                )
            else:
                traced = torch.jit.trace(wrapper, example)
                torch.jit.save(traced, str(path))
        return path.read_bytes()


def run_exported(data: bytes, fmt: Format, inputs: list[Tensor]) -> list[np.ndarray]:
    """Runs the exported bytes as a user would: onnxruntime (CPU) or torch.jit.load."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        return [session.run(["logits"], {"image": x.numpy()})[0] for x in inputs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in recent torch; still asked for
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    with torch.no_grad():
        return [module(x).numpy() for x in inputs]


def compare(eager: list[np.ndarray], exported: list[np.ndarray], inputs: list[Tensor]) -> list[CheckCase]:
    cases = []
    for e, o, x in zip(eager, exported, inputs):
        if e.shape != o.shape:
            raise ExportCheckError(
                f"exported output shape {o.shape} differs from the eager {e.shape} for input {tuple(x.shape)}"
            )
        e64, o64 = e.astype(np.float64), o.astype(np.float64)
        diff = np.abs(o64 - e64)
        excess = diff - (ATOL + RTOL * np.abs(e64))
        cases.append(
            CheckCase(list(x.shape), float(diff.max()), float(excess.max()), float((o.argmax(1) == e.argmax(1)).mean()))
        )
    return cases


def export_model(
    checkpoint: str,
    fmt: Format,
    out_uri: str | None = None,
    *,
    which: str = "auto",
    size: tuple[int, int] | None = None,
) -> ExportResult:
    """Exports the checkpoint's teacher or student, checks it against the eager model, and writes the model
    file and `<name>.json` (preprocessing, classes, output semantics, the check's figures)."""
    from u2pl_ray.data.fs import split_query, write_bytes_atomic, write_text_atomic
    from u2pl_ray.engine.artifacts import load_trained_model, resolve_checkpoint_uri

    if fmt not in SUFFIX:
        raise ValueError(f"format must be one of {sorted(SUFFIX)}, given {fmt!r}")
    loaded = load_trained_model(resolve_checkpoint_uri(checkpoint), which=which)  # type: ignore[arg-type]
    prep = Preprocessing.from_loaded(loaded)
    crop = int(loaded.cfg.eval.crop_size or loaded.cfg.data.crop_size)
    height, width = size or (crop, crop)
    wrapper = LogitsAtInputSize(loaded.model.cpu().eval()).eval()
    inputs = check_inputs(prep, height, width)
    data = _export_bytes(wrapper, inputs[0], fmt)
    with torch.no_grad():
        eager = [wrapper(x).numpy() for x in inputs]
    cases = compare(eager, run_exported(data, fmt, inputs), inputs)
    bad = [c for c in cases if not c.ok]
    if bad:
        raise ExportCheckError(
            f"exported {fmt} model differs from the eager model: "
            + "; ".join(
                f"input {c.shape}: max |diff| {c.max_abs_diff:.3g}, {c.worst_excess:.3g} over the tolerance "
                f"(atol {ATOL}, rtol {RTOL})"
                for c in bad
            )
        )
    if out_uri is None:
        out_uri = f"u2pl_{loaded.which}_it{int(loaded.meta.get('iteration', 0)):08d}{SUFFIX[fmt]}"
    location, query = split_query(out_uri)
    stem = location[: -len(Path(location).suffix)] if Path(location).suffix else location
    json_uri = f"{stem}.json" + (f"?{query}" if query else "")
    sidecar = describe(loaded, prep, fmt, Path(location).name, (height, width), cases)
    write_bytes_atomic(out_uri, data)
    write_text_atomic(json_uri, json.dumps(sidecar, indent=1))
    return ExportResult(out_uri, json_uri, fmt, cases, sidecar)


def describe(
    loaded: Any, prep: Preprocessing, fmt: Format, file_name: str, size: tuple[int, int], cases: list[CheckCase]
) -> dict[str, Any]:
    """The JSON written next to the exported model: everything needed to use it without this package."""
    meta = loaded.meta
    if fmt == "onnx":  # onnx/onnxruntime are the optional 'export' extra: imported only when used
        import onnxruntime

        runtime = f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider"
    else:
        runtime = f"torch.jit.load (torch {torch.__version__}, CPU)"
    pre = prep.to_json()
    return {
        "format": EXPORT_FORMAT,
        "model_file": file_name,
        "model_format": fmt,
        **({"onnx_opset": OPSET} if fmt == "onnx" else {}),
        "input": {
            "name": "image",
            "shape": ["batch", 3, "height", "width"],
            "dtype": "float32",
            "export_size": list(size),
            "free_axes": ["batch", "height", "width"],
            "preprocessing": {k: pre[k] for k in ("color_order", "layout", "value_range", "normalise", "mean", "std")},
        },
        "output": {
            "name": "logits",
            "shape": ["batch", pre["num_classes"], "height", "width"],
            "dtype": "float32",
            "semantics": "class logits (before softmax) at the input resolution: the network's stride-4 logits "
            "upsampled bilinearly with align_corners=True; class id = argmax over axis 1",
        },
        "num_classes": pre["num_classes"],
        "classes": pre["classes"],
        "class_source": pre["class_source"],
        "checkpoint": {
            "source": loaded.source,
            "weights": loaded.which,
            "iteration": meta.get("iteration"),
            "epoch": meta.get("epoch"),
            "metrics": {k: v for k, v in (meta.get("metrics") or {}).items() if k.startswith("val/")},
            "backbone": loaded.cfg.model.backbone,
        },
        "check": {
            "runtime": runtime,
            "tolerance": {"rtol": RTOL, "atol": ATOL, "rule": "|exported - eager| <= atol + rtol * |eager|"},
            "cases": [
                {"input_shape": c.shape, "max_abs_diff": c.max_abs_diff, "argmax_agreement": c.argmax_agreement}
                for c in cases
            ],
        },
        "torch_version": torch.__version__,
    }
