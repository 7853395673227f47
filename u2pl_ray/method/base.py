"""What the engine asks of a segmentation method. The engine knows no method by name: it builds one with
`build_method` (u2pl_ray.method.registry) and calls only this interface.

    method = build_method(cfg.method, MethodContext(...))
    loss, metrics = method.losses(student, teacher, StepBatch(image_l, label_l, image_u), epoch=e, iteration=i)
    loss.backward(); optimizer.step()
    method.update_teacher(teacher, student, epoch=e, iteration=i)

Class attributes say what the engine must provide: unlabelled batches (`needs_unlabeled`), and how many
independent weak views of each unlabelled image (`unlabeled_views`), an EMA teacher (`uses_teacher`:
built, broadcast, checkpointed and validated by the engine), and which keys of `state_dict()` are
identical on every rank (`rank_shared_state`: stored once, digested per rank).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

Phase = Callable[[str], AbstractContextManager]
Gather = Callable[[Tensor], Tensor]


def no_phase(_: str) -> AbstractContextManager:
    return contextlib.nullcontext()


@dataclass
class MethodContext:
    """What a method is built with besides its config section."""

    num_classes: int
    total_epochs: int
    iters_per_epoch: int
    device: torch.device | str = "cpu"
    rep_dim: int = 0
    ignore_index: int = 255
    gather: Gather = field(default=lambda x: x)  # all-gather of rows across ranks (identity in one process)
    seed: int = 0  # per rank: ranks draw differently
    phase: Phase = no_phase  # the engine's per-phase timer
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)  # the normalisation of the images (pixel units, 0..255)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)


@dataclass
class StepBatch:
    """One iteration's inputs on the training device: normalised float images, long labels."""

    image_l: Tensor  # [B, 3, H, W]
    label_l: Tensor  # [B, H, W]
    image_u: Tensor | None = None  # [B, 3, H, W]
    ignore_u: Tensor | None = None  # [B, H, W] uint8 or long: 255 where image_u's crop padded, else 0
    image_u2: Tensor | None = None  # a second weak view of the same unlabelled images (unlabeled_views = 2)
    ignore_u2: Tensor | None = None


class Method(ABC):
    name: ClassVar[str]
    needs_unlabeled: ClassVar[bool] = False
    unlabeled_views: ClassVar[int] = 1  # independent weak views of each unlabelled image per batch
    uses_teacher: ClassVar[bool] = False
    rank_shared_state: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def losses(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        batch: StepBatch,
        *,
        epoch: int,
        iteration: int,
        autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    ) -> tuple[Tensor, dict[str, float]]:
        """The total loss (float32, differentiable) of one iteration and its metrics."""

    def update_teacher(self, teacher: nn.Module | None, student: nn.Module, *, epoch: int, iteration: int) -> None:
        """After optimizer.step(): the EMA update of the teacher, if the method has one."""

    @staticmethod
    def lr_iteration(iteration: int) -> int:
        """The iteration whose poly learning rate iteration `iteration` trains with (its official timing)."""
        return iteration

    @classmethod
    def teacher_selected(cls, cfg: Any, epochs_done: int) -> bool:
        """Whether, after `epochs_done` epochs, the teacher is the model validation selects and the
        command-line tools load (else the student)."""
        return False

    def picture_drop_percent(self, epoch: int) -> float | None:
        """The share of pseudo-label pixels the method filters out at `epoch`, for the pictures drawn at
        validation (None: the method draws no pseudo-label pictures)."""
        return None

    def progress_values(self) -> dict[str, float]:
        """Extra scalars for progress reports (e.g. the memory bank's fill)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores `state_dict()`; a method without state accepts an empty dict."""


def output(out: Any, key: str, who: str) -> Tensor:
    """`out[key]` of a model's dict output, or a clear error naming what the model returned."""
    if not isinstance(out, dict) or key not in out:
        have = sorted(out) if isinstance(out, dict) else type(out).__name__
        raise KeyError(f"{who} output lacks '{key}' (has {have}); the model must return a dict with 'pred' and 'rep'")
    return out[key]


def zero_of_outputs(out: dict) -> Tensor:
    """0 * the sum of every output: a zero that keeps every head (representation, aux) in the graph, as
    DDP without unused-parameter search needs."""
    return sum(0.0 * v.float().sum() for v in out.values() if isinstance(v, Tensor))  # type: ignore[return-value]


def metrics_of(**values: Tensor) -> dict[str, float]:
    """Floats of the given 0-d tensors with one device-to-host copy; absent losses are 0."""
    device = next(iter(values.values())).device
    for name in ("sup", "unsup", "contra", "contra_loss", "total"):
        values.setdefault(name, torch.zeros((), device=device))
    keys = list(values)
    packed = torch.stack([values[k].detach().float().reshape(()).to(device) for k in keys])
    return dict(zip(keys, packed.tolist()))
