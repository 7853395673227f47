"""Fault injection for the reliability tests and bench_faults (config section `fault`), off by default."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from u2pl_ray.config import FaultConfig


class InjectedFault(RuntimeError):
    """Raised on purpose by `fault.kind: raise` or `checkpoint`."""


class NonFiniteLossError(RuntimeError):
    """The loss stayed non-finite for `max_nonfinite_steps` iterations in a row."""


class FaultInjector:
    def __init__(self, cfg: FaultConfig):
        self.cfg = cfg

    def _fires(self, iteration: int, kind: str) -> bool:
        cfg = self.cfg
        if cfg.fail_at_iter is None or cfg.kind != kind or iteration != cfg.fail_at_iter:
            return False
        if cfg.once_marker:
            marker = Path(cfg.once_marker)
            if marker.exists():
                return False
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"fired at iteration {iteration}\n")
        return True

    def before_step(self, iteration: int) -> None:
        if self._fires(iteration, "raise"):
            raise InjectedFault(f"injected fault at iteration {iteration}")
        if self._fires(iteration, "exit"):
            os._exit(17)  # a worker that dies without a word, as a preempted node does

    def corrupt_loss(self, iteration: int, loss: Tensor) -> Tensor:
        """`kind: nan` makes every loss from `fail_at_iter` on non-finite."""
        cfg = self.cfg
        if cfg.kind == "nan" and cfg.fail_at_iter is not None and iteration >= cfg.fail_at_iter:
            return loss * torch.tensor(float("nan"), device=loss.device)
        return loss

    def during_checkpoint(self, iteration: int) -> None:
        """`kind: checkpoint` fails after part of a checkpoint has been written."""
        if self._fires(iteration, "checkpoint"):
            raise InjectedFault(f"injected fault while writing the checkpoint of iteration {iteration}")
