"""Scoring a trained model on a labelled part of a dataset: per-class IoU, mIoU and pixel accuracy.

Each share of the images (rank r of W, contiguous rows, as the data layer splits validation) yields a
confusion matrix; the matrices are summed. With several workers the shares run as Ray tasks, each
holding the model once (weights passed through the object store), on a GPU when asked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from u2pl_ray.config import Config
from u2pl_ray.console import bar
from u2pl_ray.engine.inference import InferenceSpec
from u2pl_ray.metrics import ConfusionMatrix

EVAL_FORMAT = "u2pl-ray/evaluation/1"


@dataclass
class EvalReport:
    checkpoint: str
    weights: str
    iteration: int | None
    data: str
    part: str
    settings: dict[str, Any]
    class_names: list[str]
    confusion: np.ndarray  # int64 [C, C], rows = ground truth, columns = prediction
    num_images: int
    seconds: float
    workers: int
    extra: dict[str, Any] = field(default_factory=dict)

    def _matrix(self) -> ConfusionMatrix:
        matrix = ConfusionMatrix(len(self.class_names))
        matrix.mat = torch.from_numpy(np.asarray(self.confusion, dtype=np.int64))
        return matrix

    @property
    def iou(self) -> list[float]:
        return [float(v) for v in self._matrix().iou_per_class().tolist()]

    @property
    def miou(self) -> float:
        """Mean over all classes, absent ones counting 0 (the official definition, spec §7)."""
        return self._matrix().miou()

    @property
    def miou_present(self) -> float:
        """Mean over the classes present in the ground truth or the predictions (union > 0)."""
        _, union = self._matrix().intersection_union()
        present = union > 0
        return float(torch.tensor(self.iou, dtype=torch.float64)[present].mean()) if bool(present.any()) else 0.0

    @property
    def pixel_accuracy(self) -> float:
        return self._matrix().pixel_accuracy()

    def to_json(self) -> dict[str, Any]:
        gt_pixels = np.asarray(self.confusion).sum(1).tolist()
        return {
            "format": EVAL_FORMAT,
            "checkpoint": self.checkpoint,
            "weights": self.weights,
            "iteration": self.iteration,
            "data": self.data,
            "part": self.part,
            "settings": self.settings,
            "num_images": self.num_images,
            "seconds": round(self.seconds, 3),
            "workers": self.workers,
            "miou": self.miou,
            "miou_present_classes": self.miou_present,
            "pixel_accuracy": self.pixel_accuracy,
            "per_class": [
                {"id": i, "name": n, "iou": v, "gt_pixels": int(p)}
                for i, (n, v, p) in enumerate(zip(self.class_names, self.iou, gt_pixels))
            ],
            "confusion": np.asarray(self.confusion).tolist(),
            **self.extra,
        }

    def table(self) -> str:
        width = max(12, *(len(n) for n in self.class_names))
        gt_pixels = np.asarray(self.confusion).sum(1)
        lines = [f"{'class':<{width}}  {'IoU %':>7}  {'GT pixels':>11}", "-" * (width + 22)]
        for name, iou, pixels in zip(self.class_names, self.iou, gt_pixels):
            lines.append(f"{name:<{width}}  {100 * iou:7.2f}  {int(pixels):11d}")
        lines.append("-" * (width + 22))
        lines.append(
            f"{'mIoU':<{width}}  {100 * self.miou:7.2f}   (all {len(self.class_names)} classes; "
            f"{100 * self.miou_present:.2f} over the classes present)"
        )
        lines.append(f"{'pixel acc.':<{width}}  {100 * self.pixel_accuracy:7.2f}")
        return "\n".join(lines)


def evaluation_config(
    cfg: Config,
    *,
    data: str | None = None,
    mode: str | None = None,
    crop_size: int | None = None,
    stride_ratio: float | None = None,
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
) -> Config:
    """The checkpoint's config with the evaluation choices of the command line applied."""
    updates: dict[str, Any] = {}
    for key, value in (("mode", mode), ("crop_size", crop_size), ("stride_ratio", stride_ratio), ("flip", flip)):
        if value is not None:
            updates[key] = value
    if scales is not None:
        updates["scales"] = [float(s) for s in scales]
    new = cfg.model_copy(deep=True)
    if updates:
        new.eval = type(cfg.eval).model_validate({**cfg.eval.model_dump(), **updates})
    if data is not None:
        new.data = type(cfg.data).model_validate({**cfg.data.model_dump(), "root": data})
    return new


def dataset_part(cfg: Config, part: str = "val") -> Any:
    """A DatasetInfo whose `val` is the part to score: 'val', or 'SPLIT/labeled' (the labelled training
    images of a split). Unlike training, it needs no labelled split, only the part asked for."""
    from u2pl_ray.data.cache import ensure_dataset
    from u2pl_ray.data.errors import DataError
    from u2pl_ray.data.fs import redact
    from u2pl_ray.data.info import DatasetInfo, read_manifest
    from u2pl_ray.data.schema import PartInfo

    root = ensure_dataset(cfg.data)
    manifest = read_manifest(root)
    if part == "val":
        rows = manifest.val
    elif part.endswith("/labeled"):
        rows = manifest.part(part.rsplit("/", 1)[0], "labeled")
    else:
        raise DataError(
            f"cannot evaluate on {part!r}: use 'val' or 'SPLIT/labeled' "
            f"(splits of {redact(root)}: {', '.join(sorted(manifest.splits)) or 'none'})"
        )
    if rows.rows == 0:
        raise DataError(f"{redact(root)} has no images in {part!r}")
    if manifest.ignore_index != cfg.data.ignore_index:
        raise DataError(
            f"dataset {redact(root)} uses ignore index {manifest.ignore_index}, the checkpoint {cfg.data.ignore_index}"
        )
    return DatasetInfo(
        root=root,
        name=manifest.name,
        split=part,
        class_names=tuple(c.name for c in manifest.classes),
        class_colors=tuple(c.color for c in manifest.classes),
        ignore_index=manifest.ignore_index,
        labeled=PartInfo(),
        unlabeled=PartInfo(),
        val=rows,
        source=manifest.source,
    )


def _counted(samples: Iterable[Any], box: list[int]) -> Iterator[Any]:
    for sample in samples:
        box[0] += 1
        yield sample


def confusion_of_share(
    model: nn.Module, cfg: Config, info: Any, rank: int, world: int, num_classes: int, device: torch.device
) -> tuple[np.ndarray, int]:
    """(confusion matrix, images) of share `rank` of `world`, with the engine's validation code."""
    from u2pl_ray.data.stream import iter_val_samples
    from u2pl_ray.engine.validation import confusion_over

    count = [0]
    share = -(-info.num_val // max(1, world)) if world > 1 else info.num_val
    samples = _counted(bar(iter_val_samples(cfg.data, info, rank, world), total=share, desc="evaluate"), count)
    matrix = confusion_over(model.to(device).eval(), samples, cfg, num_classes, device, contextlib.nullcontext)
    return matrix.mat.cpu().numpy(), count[0]


def _share_task(
    state: dict[str, Any], cfg_dict: dict[str, Any], info: Any, rank: int, world: int, num_classes: int, threads: int
) -> tuple[np.ndarray, int]:
    from u2pl_ray.config import build_config
    from u2pl_ray.model import build_model

    torch.set_num_threads(max(1, threads))
    cfg = build_config(cfg_dict, source="evaluation task")
    model = build_model(cfg.model.model_copy(update={"pretrained": None}), num_classes)
    model.load_state_dict(state)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return confusion_of_share(model, cfg, info, rank, world, num_classes, device)


def confusion_with_ray(
    model: nn.Module,
    cfg: Config,
    info: Any,
    num_classes: int,
    workers: int,
    *,
    num_gpus: float = 0.0,
    num_cpus: float = 1.0,
) -> tuple[np.ndarray, int]:
    """Sums the confusion matrices of `workers` Ray tasks, one share each (Ray must be initialised)."""
    import ray

    from u2pl_ray.config import config_to_dict

    task = ray.remote(_share_task).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=1)
    state = ray.put({k: v.cpu() for k, v in model.state_dict().items()})
    cfg_dict = config_to_dict(cfg)
    refs = [task.remote(state, cfg_dict, info, rank, workers, num_classes, int(num_cpus)) for rank in range(workers)]
    total, images = np.zeros((num_classes, num_classes), dtype=np.int64), 0
    for matrix, count in ray.get(refs):
        total += matrix
        images += count
    return total, images


def spec_settings(spec: InferenceSpec) -> dict[str, Any]:
    out = dataclasses.asdict(spec)
    out["scales"] = list(spec.scales)
    out["stride"] = spec.stride if spec.mode == "slide" else None
    if spec.mode != "center":
        out.pop("label_pad_value")
    return out


def evaluate(
    checkpoint: str,
    *,
    data: str | None = None,
    part: str = "val",
    which: str = "auto",
    mode: str | None = None,
    crop_size: int | None = None,
    stride_ratio: float | None = None,
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
    workers: int = 1,
    num_gpus: float = 0.0,
    num_cpus: float = 1.0,
    device: str = "auto",
) -> EvalReport:
    """Scores a checkpoint. `workers` > 1 runs Ray tasks (call ray.init first); 1 runs in this process.
    Settings left None come from the checkpoint's own `eval` section."""
    from u2pl_ray.engine.artifacts import load_trained_model, resolve_checkpoint_uri
    from u2pl_ray.engine.validation import inference_spec
    from u2pl_ray.serving.predictor import pick_device

    started = time.monotonic()
    # a run folder names its best (or newest) checkpoint: the report names the one actually scored
    loaded = load_trained_model(resolve_checkpoint_uri(checkpoint), which=which)  # type: ignore[arg-type]
    cfg = evaluation_config(
        loaded.cfg, data=data, mode=mode, crop_size=crop_size, stride_ratio=stride_ratio, scales=scales, flip=flip
    )
    info = dataset_part(cfg, part)
    num_classes = int(cfg.model.num_classes or loaded.meta.get("num_classes"))
    if info.num_classes != num_classes:
        raise ValueError(f"the model predicts {num_classes} classes but {info.root} has {info.num_classes}")
    if workers > 1:
        matrix, images = confusion_with_ray(
            loaded.model, cfg, info, num_classes, workers, num_gpus=num_gpus, num_cpus=num_cpus
        )
    else:
        matrix, images = confusion_of_share(loaded.model, cfg, info, 0, 1, num_classes, pick_device(device))
    return EvalReport(
        checkpoint=loaded.source,
        weights=loaded.which,
        iteration=loaded.meta.get("iteration"),
        data=info.root,
        part=part,
        settings=spec_settings(inference_spec(cfg)),
        class_names=list(info.class_names),
        confusion=matrix,
        num_images=images,
        seconds=time.monotonic() - started,
        workers=max(1, workers),
        extra={"variant": cfg.method.variant},
    )
