"""U2PL: one iteration in the official order of operations (spec §1.2).

Semi iterations: (epoch S only) teacher := student; teacher eval forward on the clean unlabelled
images -> hard pseudo-labels at H x W; the gate and the strong augmentation; ONE student forward on
cat(labelled, mixed unlabelled); supervised loss; teacher train-mode forward (no grad) on the same
batch; entropy and its percentiles; unsupervised loss; contrastive masks, bank update, contrastive
loss. The teacher is left in train mode, as the official loop leaves it. Epochs before S train the
student on the labelled batch only (the teacher's forward moves its BN statistics).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn

from u2pl_ray.config.schema import MethodConfig
from u2pl_ray.method.base import Method, MethodContext, StepBatch, metrics_of, output, zero_of_outputs
from u2pl_ray.method.contrastive import IndexSampler, contrastive_loss, generator_sampler
from u2pl_ray.method.contrastive_select import downsample_nearest, full_res_masks, select
from u2pl_ray.method.memory_bank import MemoryBank
from u2pl_ray.method.strong_aug import gate, strong_augment
from u2pl_ray.method.supervised import labelled_loss, upsample
from u2pl_ray.method.teacher import copy_student_into_teacher, ema_decay, ema_update
from u2pl_ray.method.thresholds import alpha_t, drop_percent, entropy_from_logits, percentiles
from u2pl_ray.method.unsupervised import unsupervised_loss


class U2PL(Method):
    """The per-iteration U2PL computation and its state (memory bank, generators)."""

    name = "u2pl"
    needs_unlabeled = True
    uses_teacher = True
    rank_shared_state = ("memory_bank",)  # all-gathered: identical on every rank

    def __init__(self, cfg: MethodConfig, ctx: MethodContext, index_sampler: IndexSampler | None = None) -> None:
        self.cfg = cfg
        self.num_classes = ctx.num_classes
        self.total_epochs = ctx.total_epochs
        self.iters_per_epoch = ctx.iters_per_epoch
        self.device = torch.device(ctx.device)
        self.ignore_index = ctx.ignore_index
        self.gather = ctx.gather
        self.phase = ctx.phase
        official = cfg.variant == "official"
        weight = cfg.contra_weight if cfg.contra_weight is not None else (1.0 if official else 0.1)
        # official: the /W of its all_reduce trick is a fixed config value, not the live worker count.
        self.contra_scale = weight * (cfg.contra_grad_scale if official else 1.0)
        # Distinct streams per seed; the context's seed is per rank, so that ranks draw differently.
        self.aug_generator = torch.Generator().manual_seed(2 * ctx.seed)
        self.sample_generator = torch.Generator().manual_seed(2 * ctx.seed + 1)
        self.sampler = index_sampler or generator_sampler(self.sample_generator)
        self.memory_bank: MemoryBank | None = None
        if cfg.contrastive:
            capacities = [cfg.bank_size_class0] + [cfg.bank_size] * (ctx.num_classes - 1)
            self.memory_bank = MemoryBank(capacities, ctx.rep_dim, self.device)

    @classmethod
    def teacher_selected(cls, cfg: Any, epochs_done: int) -> bool:
        # The official selection: the student before the teacher takes over (epoch S), then the teacher.
        return epochs_done > cfg.sup_only_epochs

    def picture_drop_percent(self, epoch: int) -> float | None:
        return drop_percent(epoch, self.total_epochs, self.cfg.drop_percent)

    def progress_values(self) -> dict[str, float]:
        if self.memory_bank is None:
            return {}
        return {f"bank_fill/{c}": float(f) for c, f in enumerate(self.memory_bank.fill())}

    # -- the loss -----------------------------------------------------------------------------
    def _supervised(self, out: dict, label_l: Tensor, num_labeled: int | None = None) -> Tensor:
        return labelled_loss(out, label_l, self.cfg, self.ignore_index, num_labeled)

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
        """Total loss (float32, differentiable) and metrics for one iteration."""
        cfg = self.cfg
        image_l, label_l, image_u = batch.image_l, batch.label_l, batch.image_u
        if teacher is None or image_u is None:
            raise ValueError("method.name='u2pl' needs a teacher and an unlabelled batch (image_u)")
        if epoch < cfg.sup_only_epochs:
            return self._warmup(student, teacher, image_l, label_l, autocast)
        return self._semi(student, teacher, image_l, label_l, image_u, epoch, autocast)

    def _warmup(self, student, teacher, image_l, label_l, autocast):
        with self.phase("student_forward"), autocast():
            out = student(image_l)
        with self.phase("sup_loss"):
            sup = self._supervised(out, label_l)
        teacher.train()
        with self.phase("teacher_forward"), torch.no_grad(), autocast():
            teacher(image_l)  # only for the teacher's BN running statistics
        zero = zero_of_outputs(out)
        total = sup + zero + zero
        return total, metrics_of(sup=sup, unsup=zero, contra=zero, total=total)

    def _semi(self, student, teacher, image_l, label_l, image_u, epoch, autocast):
        cfg, ignore = self.cfg, self.ignore_index
        num_labeled = image_l.shape[0]
        size = (label_l.shape[-2], label_l.shape[-1])
        if epoch == cfg.sup_only_epochs:
            copy_student_into_teacher(teacher, student)

        with self.phase("teacher_pseudo_label"), torch.no_grad():
            teacher.eval()
            with autocast():
                logits_u = output(teacher(image_u), "pred", "teacher")
            prob_u = torch.softmax(upsample(logits_u, size), dim=1)
            confidence, pseudo = torch.max(prob_u, dim=1)
            del prob_u

        with self.phase("strong_aug"), torch.no_grad():
            mixed = gate(cfg.strong_aug_prob, self.aug_generator) and cfg.strong_aug != "none"
            if mixed:
                image_u, pseudo, confidence = strong_augment(
                    image_u, pseudo, confidence, cfg.strong_aug, self.aug_generator, ignore_index=ignore
                )

        image_all = torch.cat([image_l, image_u])
        with self.phase("student_forward"), autocast():
            out = student(image_all)
        pred_all = output(out, "pred", "student")
        with self.phase("sup_loss"):
            sup = self._supervised(out, label_l, num_labeled)

        teacher.train()
        with self.phase("teacher_forward"), torch.no_grad():
            with autocast():
                out_t = teacher(image_all)
            pred_t = output(out_t, "pred", "teacher").float()

        drop = drop_percent(epoch, self.total_epochs, cfg.drop_percent)
        alpha = alpha_t(epoch, self.total_epochs, cfg.low_entropy_threshold)
        with self.phase("entropy_thresholds"), torch.no_grad():
            entropy_u = entropy_from_logits(upsample(pred_t[num_labeled:], size))
            valid_u = pseudo != ignore
            qs = [drop, alpha, 100 - alpha] if cfg.contrastive else [drop]
            if bool(valid_u.any()):
                thresholds = percentiles(entropy_u[valid_u], qs)
            else:
                thresholds = [torch.tensor(float("nan"), device=entropy_u.device)] * len(qs)

        with self.phase("unsup_loss"):
            unsup_res = unsupervised_loss(
                upsample(pred_all[num_labeled:], size),
                pseudo,
                entropy_u,
                drop,
                ignore_index=ignore,
                threshold=thresholds[0],
            )
            unsup = unsup_res.loss * cfg.unsup_weight

        extra: dict[str, float] = {"new_keys": 0.0, "valid_classes": 0.0, "contra_terms": 0.0}
        if cfg.contrastive:
            with self.phase("contrastive"):
                contra, raw, extra = self._contrastive(out, out_t, pred_t, label_l, pseudo, entropy_u, thresholds)
        else:
            contra = raw = zero_of_outputs(out)
        total = sup + unsup + contra
        metrics = metrics_of(
            sup=sup,
            unsup=unsup,
            contra=contra,
            contra_loss=raw,
            total=total,
            reliable_share=unsup_res.reliable_share,
            unsup_threshold=thresholds[0],
        )
        metrics.update(extra, drop_percent=drop, alpha_t=alpha, strong_aug=float(mixed))
        return total, metrics

    def _contrastive(self, out, out_t, pred_t, label_l, pseudo, entropy_u, thresholds):
        cfg = self.cfg
        if "rep" not in out or "rep" not in out_t:
            raise KeyError("method.contrastive=True needs the model's 'rep' output (model.rep_head: true)")
        rep, rep_t = out["rep"], out_t["rep"]
        num_labeled = label_l.shape[0]
        with torch.no_grad():
            low_full, high_full = full_res_masks(
                label_l,
                pseudo,
                entropy_u,
                thresholds[1],
                thresholds[2],
                variant=cfg.variant,
                negative_high_entropy=cfg.negative_high_entropy,
                ignore_index=self.ignore_index,
            )
            labels_small, low, high = downsample_nearest(
                [torch.cat([label_l, pseudo]), low_full, high_full], (rep.shape[-2], rep.shape[-1])
            )
            selection = select(
                torch.softmax(pred_t, dim=1),
                labels_small,
                low,
                high,
                num_labeled=num_labeled,
                variant=cfg.variant,
                anchor_threshold=cfg.anchor_threshold,
                negative_threshold=cfg.negative_threshold,
                low_rank=cfg.low_rank,
                high_rank=cfg.high_rank,
                ignore_index=self.ignore_index,
            )
        assert self.memory_bank is not None
        result = contrastive_loss(
            rep,
            rep_t,
            selection,
            self.memory_bank,
            variant=cfg.variant,
            num_queries=cfg.num_queries,
            num_negatives=cfg.num_negatives,
            temperature=cfg.temperature,
            sampler=self.sampler,
            gather=self.gather,
        )
        extra = {
            "new_keys": float(result.new_keys),
            "valid_classes": float(result.valid_classes),
            "contra_terms": float(result.terms),
        }
        return result.loss * self.contra_scale, result.loss, extra

    # -- teacher ------------------------------------------------------------------------------
    def update_teacher(self, teacher: nn.Module | None, student: nn.Module, *, epoch: int, iteration: int) -> None:
        """EMA after optimizer.step(): nothing before epoch S, the alias arithmetic at S, EMA after."""
        cfg = self.cfg
        if teacher is None or epoch < cfg.sup_only_epochs:
            return
        decay = ema_decay(iteration, self.iters_per_epoch, cfg.sup_only_epochs, cfg.ema_decay)
        ema_update(teacher, student, decay, teacher_is_student=epoch == cfg.sup_only_epochs)

    # -- checkpoint ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "memory_bank": self.memory_bank.state_dict() if self.memory_bank is not None else None,
            "aug_generator": self.aug_generator.get_state(),
            "sample_generator": self.sample_generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if (state.get("memory_bank") is None) != (self.memory_bank is None):
            raise ValueError("U2PL state: memory bank presence does not match method.contrastive")
        if self.memory_bank is not None:
            self.memory_bank.load_state_dict(state["memory_bank"])
        self.aug_generator.set_state(state["aug_generator"])
        self.sample_generator.set_state(state["sample_generator"])
