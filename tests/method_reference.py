"""Slow, literal reference implementations written from the spec text (docs/u2pl-official-behaviour.md),
for comparison with u2pl_ray.method in tests only: Python loops, per-class `torch.cat` queues,
numpy percentiles, `F.cosine_similarity` on materialised [Q, 1+N, D] tensors.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def label_onehot_official(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """§5.1: scatter a [B,1,H,W] index into a [C,B,H,W] tensor along dim 0, zero the 255 positions,
    permute to [B,C,H,W]. Every sample writes into batch slot 0."""
    batch, height, width = labels.shape
    out = torch.zeros(num_classes, batch, height, width)
    tmp = labels.clone()
    tmp[labels == 255] = 0
    out.scatter_(0, tmp.unsqueeze(1), 1.0)
    out[:, labels == 255] = 0
    return out.permute(1, 0, 2, 3)


def entropy_reference(logits: torch.Tensor) -> torch.Tensor:
    prob = torch.softmax(logits, dim=1)
    return -torch.sum(prob * torch.log(prob + 1e-10), dim=1)


def official_inputs(label_l, label_u, entropy_u, alpha, num_classes, size, negative_high_entropy=True):
    """§5.1 mask construction at H x W, numpy percentiles, then legacy-nearest downsampling."""
    valid_u = label_u != 255
    values = entropy_u[valid_u].cpu().numpy().flatten()
    low_thresh = np.percentile(values, alpha)
    high_thresh = np.percentile(values, 100 - alpha)
    low_entropy = (entropy_u <= float(low_thresh)).float() * valid_u.float()
    high_entropy = (entropy_u >= float(high_thresh)).float() * valid_u.float()
    labelled = (label_l.unsqueeze(1) != 255).float()
    low_mask = F.interpolate(torch.cat([labelled, low_entropy.unsqueeze(1)]), size=size, mode="nearest")
    if negative_high_entropy:
        high_u = high_entropy.unsqueeze(1)
    else:
        high_u = torch.ones_like(high_entropy).unsqueeze(1)
    high_mask = F.interpolate(torch.cat([labelled, high_u]), size=size, mode="nearest")
    onehot_l = F.interpolate(label_onehot_official(label_l, num_classes), size=size, mode="nearest")
    onehot_u = F.interpolate(label_onehot_official(label_u, num_classes), size=size, mode="nearest")
    return onehot_l.long(), onehot_u.long(), low_mask, high_mask


def enqueue_reference(queue: list[torch.Tensor], keys: torch.Tensor, size: int) -> int:
    """§5.3: queue = cat(queue, keys); keep the newest `size` rows."""
    queue[0] = torch.cat([queue[0], keys], dim=0)
    if queue[0].shape[0] >= size:
        queue[0] = queue[0][-size:]
    return keys.shape[0]


def official_contrastive_reference(
    rep,
    label_l,
    label_u,
    prob_l,
    prob_u,
    low_mask,
    high_mask,
    memobank,
    queue_size,
    rep_teacher,
    *,
    low_rank,
    high_rank,
    anchor_threshold,
    negative_threshold,
    num_queries,
    num_negatives,
    temperature,
    sampler,
):
    """§5.2, line by line: per-class lists for every class, loss loop over positions of valid_classes."""
    num_classes = label_l.shape[1]
    dim = rep.shape[1]
    low_valid = torch.cat([label_l, label_u]) * low_mask
    high_valid = torch.cat([label_l, label_u]) * high_mask
    rep = rep.permute(0, 2, 3, 1)
    rep_teacher = rep_teacher.permute(0, 2, 3, 1)
    _, idx_l = torch.sort(prob_l, 1, True)
    idx_l = idx_l.permute(0, 2, 3, 1)
    _, idx_u = torch.sort(prob_u, 1, True)
    idx_u = idx_u.permute(0, 2, 3, 1)
    prob = torch.cat([prob_l, prob_u])
    anchors, protos, valid_classes, new_keys = [], [], [], []
    for i in range(num_classes):
        lv = low_valid[:, i].bool()
        hv = high_valid[:, i].bool()
        anchor_mask = (prob[:, i] > anchor_threshold) & lv
        neg_prob = (prob[:, i] < negative_threshold) & hv
        anchors.append(rep[anchor_mask])
        protos.append(torch.mean(rep_teacher[lv].detach(), dim=0, keepdim=True))
        class_mask_u = torch.sum(idx_u[:, :, :, low_rank:high_rank].eq(i), dim=3).bool()
        class_mask_l = torch.sum(idx_l[:, :, :, :low_rank].eq(i), dim=3).bool()
        class_mask = torch.cat([class_mask_l & (label_l[:, i] == 0), class_mask_u])
        keys = rep_teacher[neg_prob & class_mask].detach()
        new_keys.append(enqueue_reference(memobank[i], keys, queue_size[i]))
        if lv.sum() > 0:
            valid_classes.append(i)
    if len(valid_classes) <= 1:
        return new_keys, torch.tensor(0.0) * rep.sum(), valid_classes
    loss = torch.tensor(0.0)
    for i in range(len(valid_classes)):
        if len(anchors[i]) > 0 and memobank[valid_classes[i]][0].shape[0] > 0:
            anchor = anchors[i][sampler(len(anchors[i]), num_queries)]
        else:
            loss = loss + 0 * rep.sum()
            continue
        with torch.no_grad():
            bank = memobank[valid_classes[i]][0].clone()
            negative = bank[sampler(len(bank), num_queries * num_negatives)].reshape(num_queries, num_negatives, dim)
            positive = protos[i].unsqueeze(0).repeat(num_queries, 1, 1)
            keys_all = torch.cat([positive, negative], dim=1)
        logits = F.cosine_similarity(anchor.unsqueeze(1), keys_all, dim=2)
        loss = loss + F.cross_entropy(logits / temperature, torch.zeros(num_queries).long())
    return new_keys, loss / len(valid_classes), valid_classes


def paper_contrastive_reference(
    rep,
    label_l,
    label_u,
    prob_t,
    entropy_u,
    alpha,
    memobank,
    queue_size,
    rep_teacher,
    *,
    low_rank,
    high_rank,
    anchor_threshold,
    negative_threshold,
    num_queries,
    num_negatives,
    temperature,
    sampler,
):
    """Paper variant (VARIANTS.md) with explicit per-class, per-pixel loops at h x w.

    Inputs at full resolution (labels, entropy) are downsampled here with legacy nearest.
    """
    num_labeled = label_l.shape[0]
    num_classes = prob_t.shape[1]
    dim = rep.shape[1]
    size = tuple(rep.shape[-2:])
    valid_u = label_u != 255
    values = entropy_u[valid_u].cpu().numpy().flatten()
    gamma = float(np.percentile(values, 100 - alpha))
    reliable = ((entropy_u <= gamma) & valid_u).float().unsqueeze(1)
    unreliable = ((entropy_u >= gamma) & valid_u).float().unsqueeze(1)
    down = lambda x: F.interpolate(x.float(), size=size, mode="nearest")  # noqa: E731
    labels = down(torch.cat([label_l, label_u]).unsqueeze(1))[:, 0].long()
    reliable = down(reliable)[:, 0].bool()
    unreliable = down(unreliable)[:, 0].bool()
    rep_p = rep.permute(0, 2, 3, 1)
    rep_t = rep_teacher.permute(0, 2, 3, 1)
    batch = labels.shape[0]
    anchors, protos, new_keys = [], [], []
    for c in range(num_classes):
        anchor_rows, key_rows = [], []
        for b in range(batch):
            for y in range(size[0]):
                for x in range(size[1]):
                    lab = int(labels[b, y, x])
                    p = prob_t[b, :, y, x]
                    rank = int((torch.argsort(p, descending=True, stable=True) == c).nonzero())
                    if b < num_labeled:
                        anchor = lab == c and p[c] > anchor_threshold
                        negative = lab != 255 and lab != c and rank < low_rank
                    else:
                        anchor = lab == c and bool(reliable[b - num_labeled, y, x]) and p[c] > anchor_threshold
                        negative = bool(unreliable[b - num_labeled, y, x]) and low_rank <= rank < high_rank
                    if anchor:
                        anchor_rows.append((b, y, x))
                    if negative and p[c] < negative_threshold:
                        key_rows.append((b, y, x))
        anchors.append(torch.stack([rep_p[b, y, x] for b, y, x in anchor_rows]) if anchor_rows else rep_p[:0, 0, 0])
        protos.append(torch.stack([rep_t[b, y, x] for b, y, x in anchor_rows]).mean(0) if anchor_rows else None)
        keys = torch.stack([rep_t[b, y, x] for b, y, x in key_rows]) if key_rows else rep_t.new_zeros(0, dim)
        new_keys.append(enqueue_reference(memobank[c], keys.detach(), queue_size[c]))
    valid = [c for c in range(num_classes) if len(anchors[c]) > 0]
    if len(valid) <= 1:
        return new_keys, 0 * rep.sum(), valid
    terms = []
    for c in valid:
        if memobank[c][0].shape[0] == 0:
            continue
        anchor = anchors[c][sampler(len(anchors[c]), num_queries)]
        bank = memobank[c][0]
        negative = bank[sampler(len(bank), num_queries * num_negatives)].reshape(num_queries, num_negatives, dim)
        positive = protos[c].detach().view(1, 1, dim).repeat(num_queries, 1, 1)
        logits = F.cosine_similarity(anchor.unsqueeze(1), torch.cat([positive, negative], 1), dim=2)
        terms.append(F.cross_entropy(logits / temperature, torch.zeros(num_queries).long()))
    if not terms:
        return new_keys, 0 * rep.sum(), valid
    return new_keys, sum(terms) / len(terms), valid
