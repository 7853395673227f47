"""Builds what one worker trains with: device, student (and teacher when the method has one), optimiser,
AMP, the method, the stream."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from u2pl_ray.config import Config
from u2pl_ray.data.stream import TrainStream
from u2pl_ray.engine import collectives as coll
from u2pl_ray.engine.session import Session
from u2pl_ray.engine.timing import PhaseTimer, timing_enabled
from u2pl_ray.method import Method, MethodContext, StepBatch, build_method, method_class
from u2pl_ray.model import build_model, convert_sync_batchnorm


@dataclass
class Components:
    cfg: Config
    device: torch.device
    student: nn.Module  # DDP-wrapped when distributed
    unwrapped_student: nn.Module
    teacher: nn.Module | None  # when the method uses one
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    method: Method
    stream: TrainStream
    autocast: Callable[[], AbstractContextManager]
    mean: Tensor
    std: Tensor
    timer: PhaseTimer
    num_classes: int
    classes: list[dict[str, Any]]  # names and colours from the dataset manifest, saved with checkpoints

    def normalize(self, image: Tensor) -> Tensor:
        return (image.to(self.device, non_blocking=True).float() - self.mean) / self.std

    def to_device(self, batch: Any) -> StepBatch:
        """The stream's uint8 batch as the method's inputs on the device (images normalised)."""

        def image(x: Tensor | None) -> Tensor | None:
            return self.normalize(x) if x is not None else None

        def labels(x: Tensor | None) -> Tensor | None:
            return x.to(self.device, non_blocking=True).long() if x is not None else None

        def pad(x: Tensor | None) -> Tensor | None:  # kept uint8: only some methods read it (they widen it)
            return x.to(self.device, non_blocking=True) if x is not None else None

        return StepBatch(
            image_l=self.normalize(batch.image_l),
            label_l=labels(batch.label_l),  # type: ignore[arg-type]
            image_u=image(batch.image_u),
            ignore_u=pad(batch.pad_u),
            image_u2=image(batch.image_u2),
            ignore_u2=pad(batch.pad_u2),
        )

    def backward_and_step(self, loss: Tensor) -> None:
        with self.timer("backward"):
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()


def pick_device(cfg: Config, session: Session) -> torch.device:
    if cfg.scaling.use_gpu and torch.cuda.is_available():
        device = torch.device("cuda", session.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def _autocast_factory(cfg: Config, device: torch.device) -> Callable[[], AbstractContextManager]:
    if device.type != "cuda" or cfg.scaling.amp == "none":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if cfg.scaling.amp == "bf16" else torch.float16
    return lambda: torch.autocast(device_type="cuda", dtype=dtype)


def _threads(cfg: Config, session: Session) -> None:
    """Ray pins OMP threads to the worker's CPU reservation; on a laptop use the cores we share."""
    if cfg.scaling.torch_threads:
        torch.set_num_threads(cfg.scaling.torch_threads)
    elif not cfg.scaling.use_gpu:
        per_node = max(1, (os.cpu_count() or 1) // max(1, min(session.world_size, os.cpu_count() or 1)))
        torch.set_num_threads(per_node)


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW over the model's two parameter groups (`SegmentationModel.parameter_groups`)."""
    backbone, head = model.parameter_groups()  # type: ignore[operator]
    groups = [
        {"params": list(backbone), "lr": cfg.optim.lr, "initial_lr": cfg.optim.lr},
        {
            "params": list(head),
            "lr": cfg.optim.lr * cfg.optim.head_lr_mult,
            "initial_lr": cfg.optim.lr * cfg.optim.head_lr_mult,
        },
    ]
    if cfg.optim.kind == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    return torch.optim.SGD(
        groups,
        lr=cfg.optim.lr,
        momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay,
        nesterov=cfg.optim.nesterov,
    )


def build_components(cfg: Config, session: Session, info: Any, iters_per_epoch: int) -> Components:
    device = pick_device(cfg, session)
    _threads(cfg, session)
    num_classes = cfg.model.num_classes or info.num_classes
    cfg.model.num_classes = num_classes  # checkpoints then carry a self-contained config
    method_cls = method_class(cfg.method.name)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    student: nn.Module = build_model(cfg.model, num_classes)
    teacher: nn.Module | None = build_model(cfg.model, num_classes) if method_cls.uses_teacher else None
    distributed = coll.is_distributed()
    if distributed and device.type == "cuda" and cfg.model.sync_bn:
        student = convert_sync_batchnorm(student)  # keeps timm's BatchNormAct activations
        teacher = convert_sync_batchnorm(teacher) if teacher is not None else None
    student.to(device)
    if teacher is not None:
        teacher.to(device)
        for p in teacher.parameters():
            p.requires_grad_(False)
        if distributed:
            for tensor in teacher.state_dict().values():
                torch.distributed.broadcast(tensor, 0)
    optimizer = build_optimizer(cfg, student)
    wrapped: nn.Module = student
    if distributed:
        wrapped = DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False
        )
    torch.manual_seed(cfg.seed + 1000 * session.rank)  # dropout and the like differ per rank
    timer = PhaseTimer(timing_enabled(cfg.step_timing, device), device)
    method = build_method(
        cfg.method,
        MethodContext(
            num_classes=num_classes,
            total_epochs=cfg.schedule.epochs,
            iters_per_epoch=iters_per_epoch,
            device=device,
            rep_dim=cfg.model.rep_dim,
            ignore_index=cfg.data.ignore_index,
            gather=timer.wrap("allgather", coll.all_gather_rows),
            seed=cfg.seed + session.rank,
            phase=timer,
            mean=tuple(cfg.data.mean),
            std=tuple(cfg.data.std),
        ),
    )
    labeled, unlabeled = session.data_iterators()
    stream = TrainStream(
        cfg.data,
        labeled=labeled,
        unlabeled=unlabeled if method.needs_unlabeled else None,
        unlabeled_views=method.unlabeled_views,
        read_unlabeled=method.needs_unlabeled,
        rank=session.rank,
        world_size=session.world_size,
        seed=cfg.seed,
        iters_per_epoch=iters_per_epoch,
        info=info,
    )
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and cfg.scaling.amp == "fp16" else None
    mean = torch.tensor(cfg.data.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.data.std, device=device).view(1, 3, 1, 1)
    return Components(
        cfg=cfg,
        device=device,
        student=wrapped,
        unwrapped_student=student,
        teacher=teacher,
        optimizer=optimizer,
        scaler=scaler,
        method=method,
        stream=stream,
        autocast=_autocast_factory(cfg, device),
        mean=mean,
        std=std,
        timer=timer,
        num_classes=num_classes,
        classes=[{"name": n, "color": list(c)} for n, c in zip(info.class_names, info.class_colors)],
    )
