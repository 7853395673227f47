"""The contrastive loss against the memory bank (spec §5.2), both variants, vectorised over classes.

Order of work, as in the official function: select pixels, enqueue this step's negative keys into
the bank (all ranks, one gather), then compute the loss with negatives drawn from the updated bank.

Sampling: for each contributing position, in order, `sampler(n_anchors, Q)` then
`sampler(n_bank, Q*N)`, with replacement; the default sampler is torch.randint on a given
generator, which is the official RNG consumption order. The cosine similarities are computed
without materialising [Q, 1+N, D] copies of the positive: a batched matmul of the negatives
(gathered into the bank's reusable workspace) with the normalised anchors, divided by the stored
key norms. Prototypes are one batched matmul of the class masks with the teacher features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from u2pl_ray.method.contrastive_select import Selection, gather_pixels
from u2pl_ray.method.memory_bank import Gather, MemoryBank, pack_keys

IndexSampler = Callable[[int, int], Tensor]  # (high, count) -> LongTensor of count values in [0, high)
COSINE_EPS = 1e-8


def generator_sampler(generator: torch.Generator) -> IndexSampler:
    """torch.randint(high, (count,)) on `generator`: the official draws, made reproducible."""

    def sample(high: int, count: int) -> Tensor:
        return torch.randint(high, (count,), generator=generator, device=generator.device)

    return sample


@dataclass
class ContrastiveResult:
    loss: Tensor  # float32, differentiable through the student features only
    new_keys: int  # keys enqueued this step, all ranks and classes
    valid_classes: int  # classes with anchor-side pixels (official: low_valid; paper: anchors)
    terms: int  # positions that contributed a term


def plan_positions(selection: Selection, bank: MemoryBank, variant: str) -> tuple[list[tuple[int, int, int]], int, int]:
    """(positions as (anchor class, prototype class, negative class), denominator, #valid classes).

    official: positions i over valid_classes, anchors/prototype of class i, negatives of class
    valid_classes[i] (the index mismatch); skipped positions stay in the denominator.
    paper: one position per class with anchors and a non-empty bank; mean over those positions.
    An empty plan (denominator 0) means the loss is zero: the early exit (<= 1 valid class).
    """
    if variant == "official":
        valid = [c for c, present in enumerate(selection.has_low_valid) if present]
        if len(valid) <= 1:
            return [], 0, len(valid)
        positions = [(i, i, c) for i, c in enumerate(valid) if selection.anchor_counts[i] > 0 and bank.count[c] > 0]
        return positions, len(valid), len(valid)
    valid = [c for c, n in enumerate(selection.anchor_counts) if n > 0]
    if len(valid) <= 1:
        return [], 0, len(valid)
    positions = [(c, c, c) for c in valid if bank.count[c] > 0]
    return positions, len(positions), len(valid)


def _normalise(x: Tensor) -> Tensor:
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(COSINE_EPS)


def contrastive_loss(
    rep: Tensor,
    rep_teacher: Tensor,
    selection: Selection,
    bank: MemoryBank,
    *,
    variant: str,
    num_queries: int,
    num_negatives: int,
    temperature: float,
    sampler: IndexSampler,
    gather: Gather = lambda x: x,
) -> ContrastiveResult:
    """rep [B,D,h,w] student features (with grad); rep_teacher the train-mode teacher's, detached."""
    rep = rep.float()
    rep_teacher = rep_teacher.detach().float()
    keys = gather_pixels(rep_teacher, selection.neg_flat)
    new_keys = sum(bank.update(pack_keys(keys, selection.neg_class), gather))

    positions, denominator, num_valid = plan_positions(selection, bank, variant)
    if not positions:
        return ContrastiveResult(0.0 * rep.sum(), new_keys, num_valid, 0)

    anchor_first = [0]
    for n in selection.anchor_counts[:-1]:
        anchor_first.append(anchor_first[-1] + n)
    anchor_idx, neg_idx = [], []
    for anchor_cls, _, neg_cls in positions:
        anchor_idx.append(sampler(selection.anchor_counts[anchor_cls], num_queries) + anchor_first[anchor_cls])
        neg_idx.append(sampler(bank.count[neg_cls], num_queries * num_negatives))
    device = rep.device
    num_pos, dim = len(positions), rep.shape[1]

    anchor_flat = selection.anchor_flat[torch.cat(anchor_idx).to(selection.anchor_flat.device)]
    anchors = _normalise(gather_pixels(rep, anchor_flat)).view(num_pos, num_queries, dim)

    with torch.no_grad():
        proto_classes = torch.tensor([p for _, p, _ in positions], device=device)
        member = selection.proto_mask[:, proto_classes].float()  # [B, P, h*w]
        # batched matmul against the transposed view: no copy of the teacher features
        proto_sum = torch.bmm(member, rep_teacher.flatten(2).transpose(1, 2)).sum(dim=0)  # [P, D]
        proto = _normalise(proto_sum / member.sum(dim=(0, 2)).unsqueeze(1))
        neg_classes = torch.tensor([n for _, _, n in positions], device=bank.device)
        neg_classes = neg_classes.repeat_interleave(num_queries * num_negatives)
        negatives, neg_norms = bank.read(neg_classes, torch.cat(neg_idx), reuse_buffer=True)
        negatives = negatives.to(device).view(num_pos * num_queries, num_negatives, dim)
        neg_norms = neg_norms.to(device).view(num_pos, num_queries, num_negatives).clamp_min(COSINE_EPS)

    positive = (anchors * proto.unsqueeze(1)).sum(dim=-1, keepdim=True)  # [P, Q, 1]
    negative = torch.bmm(negatives, anchors.reshape(-1, dim, 1)).view(num_pos, num_queries, num_negatives)
    logits = torch.cat([positive, negative / neg_norms], dim=-1) / temperature
    target = torch.zeros(num_pos * num_queries, dtype=torch.long, device=device)
    per_anchor = F.cross_entropy(logits.view(-1, num_negatives + 1), target, reduction="none")
    # Skipped positions add only `0 * rep.sum()` in the official loop; they count in the denominator.
    loss = per_anchor.view(num_pos, num_queries).mean(dim=1).sum() / denominator
    return ContrastiveResult(loss, new_keys, num_valid, len(positions))
