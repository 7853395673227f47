"""Supervised only (SupOnly): the labelled batch and the supervised loss, nothing else. The baseline every
semi-supervised method is measured against, and a method like the others."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

from torch import Tensor, nn

from u2pl_ray.config.schema import MethodConfig
from u2pl_ray.method.base import Method, MethodContext, StepBatch, metrics_of, zero_of_outputs
from u2pl_ray.method.supervised import labelled_loss


class SupOnly(Method):
    name = "supervised"

    def __init__(self, cfg: MethodConfig, ctx: MethodContext) -> None:
        self.cfg = cfg
        self.ignore_index = ctx.ignore_index
        self.phase = ctx.phase

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
        with self.phase("student_forward"), autocast():
            out = student(batch.image_l)
        with self.phase("sup_loss"):
            sup = labelled_loss(out, batch.label_l, self.cfg, self.ignore_index)
        total = sup + zero_of_outputs(out)  # the representation head has no loss here
        return total, metrics_of(sup=sup, total=total)
