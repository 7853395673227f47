"""Segmentation methods in plain PyTorch: no Ray, no file I/O, no globals. The engine builds one with
`build_method(cfg.method, MethodContext(...))` and calls only the `Method` interface (base.py).

Randomness goes through explicit torch.Generators (or an injectable index sampler); everything
distributed goes through a `gather` function argument, so all of it runs in one process.
"""

from u2pl_ray.method.base import Method, MethodContext, StepBatch
from u2pl_ray.method.contrastive import ContrastiveResult, IndexSampler, contrastive_loss, generator_sampler
from u2pl_ray.method.contrastive_select import Selection, downsample_nearest, full_res_masks, membership, select
from u2pl_ray.method.memory_bank import MemoryBank, pack_keys
from u2pl_ray.method.registry import METHODS, build_method, method_class
from u2pl_ray.method.strong_aug import cutmix_box, gate, strong_augment
from u2pl_ray.method.sup_only import SupOnly
from u2pl_ray.method.supervised import ce_loss, ohem_loss, supervised_loss, upsample
from u2pl_ray.method.teacher import copy_student_into_teacher, ema_decay, ema_update, poly_lr, set_poly_lr
from u2pl_ray.method.thresholds import alpha_t, drop_percent, entropy, entropy_from_logits, percentile, percentiles
from u2pl_ray.method.u2pl import U2PL
from u2pl_ray.method.unimatch import UniMatch
from u2pl_ray.method.unsupervised import UnsupervisedResult, unsupervised_loss

__all__ = [
    "METHODS",
    "ContrastiveResult",
    "IndexSampler",
    "MemoryBank",
    "Method",
    "MethodContext",
    "Selection",
    "StepBatch",
    "SupOnly",
    "U2PL",
    "UniMatch",
    "UnsupervisedResult",
    "build_method",
    "method_class",
    "alpha_t",
    "ce_loss",
    "contrastive_loss",
    "copy_student_into_teacher",
    "cutmix_box",
    "downsample_nearest",
    "drop_percent",
    "ema_decay",
    "ema_update",
    "entropy",
    "entropy_from_logits",
    "full_res_masks",
    "gate",
    "generator_sampler",
    "membership",
    "ohem_loss",
    "pack_keys",
    "percentile",
    "percentiles",
    "poly_lr",
    "select",
    "set_poly_lr",
    "strong_augment",
    "supervised_loss",
    "unsupervised_loss",
    "upsample",
]
