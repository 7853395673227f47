"""The EMA teacher's official schedule (spec §1.3) and the poly learning rate (spec §1.5).

Epochs < S: no EMA. Epoch S: the official code aliases the teacher's parameter storage to the
student's at every step (`t.data = s.data`), so forwards see the student itself and the update after
`optimizer.step()` computes `decay*s + (1-decay)*s` (not always exactly s in float32). We copy the
values at the start of the step and compute that same expression after the step. From S+1:
`t = decay*t + (1-decay)*s` with decay = min(1 - 1/(n+1), ema_decay), n = iteration - iters_per_epoch*S.
Only parameters are averaged; BN buffers evolve through the teacher's own train-mode forwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _pairs(teacher: nn.Module, student: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    t_params = [p.data for p in teacher.parameters()]
    s_params = [p.data for p in student.parameters()]
    if len(t_params) != len(s_params):
        raise ValueError(f"teacher has {len(t_params)} parameters, student {len(s_params)}: not the same network")
    for i, (t, s) in enumerate(zip(t_params, s_params)):
        if t.shape != s.shape:
            raise ValueError(f"parameter {i}: teacher shape {tuple(t.shape)} != student shape {tuple(s.shape)}")
    return t_params, s_params


def ema_decay(iteration: int, iters_per_epoch: int, sup_only_epochs: int, max_decay: float) -> float:
    n = iteration - iters_per_epoch * sup_only_epochs
    return min(1 - 1 / (n + 1), max_decay)


@torch.no_grad()
def copy_student_into_teacher(teacher: nn.Module, student: nn.Module) -> None:
    """The epoch-S alias: teacher parameters take the student's values (buffers untouched)."""
    t_params, s_params = _pairs(teacher, student)
    torch._foreach_copy_(t_params, s_params)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, *, teacher_is_student: bool = False) -> None:
    """t = decay*t + (1-decay)*s, as the separate float32 products and sum of the official expression.

    teacher_is_student: the epoch-S case, where the official t is the (already stepped) student.
    """
    t_params, s_params = _pairs(teacher, student)
    first = torch._foreach_mul(s_params if teacher_is_student else t_params, decay)
    second = torch._foreach_mul(s_params, 1 - decay)
    torch._foreach_add_(first, second)
    torch._foreach_copy_(t_params, first)


def poly_lr(base_lr: float, iteration: int, max_iter: int, power: float) -> float:
    """base * (1 - i/max_iter)^power at 0-based iteration i (the lr used by iteration i)."""
    return base_lr * (1 - iteration / max_iter) ** power


def set_poly_lr(
    optimizer: torch.optim.Optimizer, base_lrs: Sequence[float], iteration: int, max_iter: int, power: float
) -> list[float]:
    """Sets every param group's lr for this iteration from its base lr. The state is the iteration
    number alone, so a resumed run continues the schedule (the official resume freezes it)."""
    if len(base_lrs) != len(optimizer.param_groups):
        raise ValueError(f"{len(base_lrs)} base lrs for {len(optimizer.param_groups)} param groups")
    lrs = [poly_lr(base, iteration, max_iter, power) for base in base_lrs]
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    return lrs
