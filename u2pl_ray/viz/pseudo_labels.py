"""The picture of what the method trusted: per validation sample, the image, its ground truth, the
teacher's pseudo-label, the teacher's entropy, the reliable / unreliable split at the current drop
percent, and the student's prediction.

The split follows the unsupervised loss (spec §3.3): the threshold is the `drop_percent` percentile
(numpy 'linear', `u2pl_ray.method.percentile`) of the entropies of all pixels shown, which play the
role of the per-worker unlabelled batch; a pixel at or above it is unreliable. Two differences from a
training step, both so that drawing never changes the run: the entropy comes from the teacher in eval
mode (training uses a second, train-mode forward that would update the BN statistics), and the images
are the clean validation images (no CutMix).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from u2pl_ray.engine.inference import forward_logits
from u2pl_ray.method.thresholds import entropy, percentile
from u2pl_ray.viz.canvas import compose_grid, png_bytes, resize_rgb, scalar_rgb
from u2pl_ray.viz.palette import class_table, colorize

RELIABLE_COLOR = (46, 139, 87)
UNRELIABLE_COLOR = (220, 20, 60)
COLUMNS = (
    "image",
    "ground truth",
    "teacher pseudo-label",
    "teacher entropy (0..ln C)",
    "reliable (green) / unreliable (red)",
    "student prediction",
)


@dataclass
class SampleView:
    sample_id: str
    image: np.ndarray  # uint8 [H, W, 3], resized for display
    label: np.ndarray  # int64 [H, W]
    pseudo_label: np.ndarray  # int64 [H, W]
    entropy: np.ndarray  # float32 [H, W]
    reliable: np.ndarray  # bool [H, W]
    prediction: np.ndarray  # int64 [H, W], the student's

    @property
    def reliable_share(self) -> float:
        return float(self.reliable.mean()) if self.reliable.size else 0.0


@dataclass
class PseudoLabelGrid:
    picture: np.ndarray  # uint8 [H, W, 3]
    views: list[SampleView]
    threshold: float  # entropy at the drop percentile
    reliable_share: float  # over all pixels shown
    drop_percent: float


def _fit(image: Tensor, label: Tensor, max_side: int) -> tuple[Tensor, Tensor]:
    """Shrinks an image (bilinear) and its label (nearest) so the longer side is at most `max_side`."""
    height, width = image.shape[-2:]
    factor = max_side / max(height, width)
    if factor >= 1:
        return image.float(), label.long()
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    small = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    small_label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0]
    return small.clamp(0, 255), small_label.long()


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def sample_views(
    student: nn.Module,
    teacher: nn.Module | None,
    samples: Sequence[tuple[Any, Tensor, Tensor]],
    drop_percent: float,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    max_side: int = 256,
) -> tuple[list[SampleView], float]:
    """Per-sample arrays for the grid, and the entropy threshold over all of them.

    `samples` are (id, uint8 [3,H,W], uint8 [H,W]) as `iter_val_samples` yields them. A missing teacher
    (supervised mode) is replaced by the student. The models are put in eval mode and restored after.
    """
    if not samples:
        raise ValueError("sample_views needs at least one sample")
    labeller = teacher if teacher is not None else student
    device = _device_of(student)
    mean_t = torch.tensor(list(mean), device=device, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(list(std), device=device, dtype=torch.float32).view(1, 3, 1, 1)
    modes = {id(m): m.training for m in (student, labeller)}
    student.eval()
    labeller.eval()
    try:
        raw = []
        for sample_id, image, label in samples:
            image, label = _fit(torch.as_tensor(image), torch.as_tensor(label), max_side)
            x = (image.to(device)[None] - mean_t) / std_t
            prob = torch.softmax(forward_logits(labeller, x), dim=1)
            pred = forward_logits(student, x).argmax(1)[0]
            raw.append((str(sample_id), image, label, prob.argmax(1)[0], entropy(prob)[0], pred))
    finally:
        for model in (student, labeller):
            model.train(modes[id(model)])
    all_entropy = torch.cat([r[4].reshape(-1) for r in raw])
    threshold = percentile(all_entropy, drop_percent)
    views = []
    for sample_id, image, label, pseudo, ent, pred in raw:
        views.append(
            SampleView(
                sample_id=sample_id,
                image=image.round().to(torch.uint8).permute(1, 2, 0).cpu().numpy(),
                label=label.cpu().numpy(),
                pseudo_label=pseudo.cpu().numpy(),
                entropy=ent.float().cpu().numpy(),
                reliable=(ent < threshold).cpu().numpy(),  # at or above the percentile: dropped (>=)
                prediction=pred.cpu().numpy(),
            )
        )
    return views, float(threshold)


def render_pseudo_label_grid(
    student: nn.Module,
    teacher: nn.Module | None,
    samples: Sequence[tuple[Any, Tensor, Tensor]],
    drop_percent: float,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    num_classes: int,
    classes: Sequence[Any] | None = None,
    max_side: int = 256,
    tile_width: int = 160,
) -> PseudoLabelGrid:
    """One picture, a row of six panels per sample (see COLUMNS), each panel `tile_width` pixels wide."""
    views, threshold = sample_views(student, teacher, samples, drop_percent, mean=mean, std=std, max_side=max_side)
    palette = class_table(classes, num_classes).palette()
    mask_colors = np.array([UNRELIABLE_COLOR, RELIABLE_COLOR], dtype=np.uint8)
    rows, titles = [], []
    for view in views:
        height, width = view.label.shape
        shown = (max(1, round(height * tile_width / width)), tile_width)  # every row as wide as the others
        panels = [
            (view.image, False),
            (colorize(view.label, palette), True),
            (colorize(view.pseudo_label, palette), True),
            (scalar_rgb(view.entropy, math.log(num_classes)), False),
            (mask_colors[view.reliable.astype(np.int64)], True),
            (colorize(view.prediction, palette), True),
        ]
        rows.append([resize_rgb(p, *shown, nearest=nearest) for p, nearest in panels])
        titles.append(f"{view.sample_id}: reliable {100 * view.reliable_share:.1f}% of its pixels")
    total = np.concatenate([v.reliable.reshape(-1) for v in views])
    share = float(total.mean())
    header = (
        f"drop percent {drop_percent:.2f}: entropy threshold {threshold:.4f}; "
        f"reliable {100 * share:.1f}% of the pixels shown"
    )
    picture = compose_grid(rows, COLUMNS, titles, title=header)
    return PseudoLabelGrid(picture, views, threshold, share, drop_percent)


def val_image_uri(run_uri: str, iteration: int) -> str:
    from u2pl_ray.data.fs import join_uri

    return join_uri(run_uri, "images", f"val_{iteration:08d}.png")


def write_pseudo_label_grid(
    run_uri: str,
    iteration: int,
    student: nn.Module,
    teacher: nn.Module | None,
    samples: Sequence[tuple[Any, Tensor, Tensor]],
    drop_percent: float,
    cfg: Any,
    classes: Sequence[Any] | None = None,
    max_side: int = 256,
) -> str:
    """Renders the grid with the run's normalisation and classes and writes RUN/images/val_<iteration>.png
    (iteration zero-padded to 8 digits, like the checkpoints). Returns the URI written."""
    from u2pl_ray.data.fs import write_bytes_atomic

    num_classes = int(cfg.model.num_classes)
    grid = render_pseudo_label_grid(
        student,
        teacher,
        samples,
        drop_percent,
        mean=cfg.data.mean,
        std=cfg.data.std,
        num_classes=num_classes,
        classes=classes,
        max_side=max_side,
    )
    uri = val_image_uri(run_uri, iteration)
    write_bytes_atomic(uri, png_bytes(grid.picture))
    return uri


def first_val_samples(cfg: Any, info: Any, count: int) -> list[tuple[Any, Tensor, Tensor]]:
    """The first `count` validation samples (rank 0 of 1), a fixed set to draw at every validation."""
    from u2pl_ray.data.stream import iter_val_samples

    out = []
    for sample in iter_val_samples(cfg.data, info, 0, 1):
        out.append(sample)
        if len(out) >= count:
            break
    return out
