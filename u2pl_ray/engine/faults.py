"""Fault injection for the reliability tests and bench_faults (config section `fault`), off by default.

    raise       the worker raises InjectedFault before iteration `fail_at_iter`
    exit        the worker process ends at once (os._exit), as on a lost node
    nan         the loss is non-finite from `fail_at_iter` on (for `nan_steps` iterations, or for good)
    checkpoint  rank 0 dies while writing the checkpoint of iteration `fail_at_iter`: the files written
                so far reach storage without their meta.json, as an upload cut short leaves them

`once_marker` names a file created when the fault fires; while it exists the fault does not fire again,
so a run restarted by Ray (or resumed) gets past the faulty iteration. `step_delay_s` slows every step.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch
from torch import Tensor

from u2pl_ray.config import FaultConfig

log = logging.getLogger(__name__)
EXIT_CODE = 17


class InjectedFault(RuntimeError):
    """Raised on purpose by `fault.kind: raise`."""


class NonFiniteLossError(RuntimeError):
    """The loss stayed non-finite for `max_nonfinite_steps` iterations in a row."""


class FaultInjector:
    def __init__(self, cfg: FaultConfig, run_uri: str | None = None):
        self.cfg = cfg
        self.run_uri = run_uri  # where checkpoints go: `checkpoint` leaves its torn copy there

    def _fires(self, iteration: int, kind: str) -> bool:
        cfg = self.cfg
        if cfg.fail_at_iter is None or cfg.kind != kind or iteration != cfg.fail_at_iter:
            return False
        if cfg.once_marker:
            marker = Path(cfg.once_marker)
            if marker.exists():
                return False
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"{kind} fault fired at iteration {iteration}\n")
        log.warning("injected %s fault at iteration %d", kind, iteration)
        return True

    def before_step(self, iteration: int) -> None:
        if self.cfg.step_delay_s:
            time.sleep(self.cfg.step_delay_s)
        if self._fires(iteration, "raise"):
            raise InjectedFault(f"injected fault at iteration {iteration}")
        if self._fires(iteration, "exit"):
            os._exit(EXIT_CODE)  # a worker that dies without a word, as a preempted node does

    def corrupt_loss(self, iteration: int, loss: Tensor) -> Tensor:
        """`kind: nan` makes the loss non-finite from `fail_at_iter` on (`nan_steps` times, or always)."""
        cfg = self.cfg
        if cfg.kind != "nan" or cfg.fail_at_iter is None or iteration < cfg.fail_at_iter:
            return loss
        if cfg.nan_steps is not None and iteration >= cfg.fail_at_iter + cfg.nan_steps:
            return loss
        return loss * torch.tensor(float("nan"), device=loss.device)

    def during_checkpoint(self, iteration: int, directory: Path | None = None) -> None:
        """`kind: checkpoint`: called by rank 0 after the weights file of a checkpoint is written and
        before its meta.json. Copies what exists so far to the run folder (a torn upload), then dies."""
        if not self._fires(iteration, "checkpoint"):
            return
        if directory is not None and self.run_uri:
            try:
                _leave_torn_copy(directory, self.run_uri)
            except OSError as exc:  # the fault still happens; only its leftovers are missing
                log.warning("fault injection: could not leave the torn checkpoint: %s", exc)
        os._exit(EXIT_CODE)


def _leave_torn_copy(directory: Path, run_uri: str) -> None:
    from u2pl_ray.data.fs import resolve_filesystem

    fs, run_path = resolve_filesystem(run_uri)
    target = f"{run_path.rstrip('/')}/{directory.name}"
    fs.create_dir(target, recursive=True)
    for path in sorted(directory.iterdir()):
        if path.is_file() and not path.name.endswith(".tmp"):
            with open(path, "rb") as src, fs.open_output_stream(f"{target}/{path.name}") as out:
                out.write(src.read())
    log.warning("fault injection: left %s without its meta.json", target)
