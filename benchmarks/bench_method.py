"""One U2PL step on CPU at VOC-like shapes, and the share of it that is U2PL-specific work.

    .venv/bin/python benchmarks/bench_method.py [--backbone resnet101_deep] [--steps 1] [--threads 2]

Shapes: 21 classes, 4 labelled + 4 unlabelled images of 257 x 257 (65 x 65 feature maps at stride 4),
256-d features, memory banks full (50,000 rows for class 0, 30,000 for the others). The network is
the real `build_model(ModelConfig(backbone=...), 21)`; its classifier output is scaled up so that the
untrained net makes confident predictions like a trained one (otherwise no pixel passes delta_p and
the contrastive loss does no work). Timed parts:

* step_s: U2PL.losses + backward + SGD step + EMA update, averaged over --steps after one warm-up;
* the phases inside `losses` (teacher pseudo-labels, strong aug, forwards, losses), step_phases_s;
* the U2PL-specific parts again on the same step's network outputs, best of --repeats (the CPU is
  shared): CutMix of the unlabelled batch, entropy + the three percentiles, and contrastive_s = masks
  + selection + bank update + contrastive loss, forward and backward (to the features);
  u2pl_extra_s = their sum; u2pl_share = u2pl_extra_s / step_s;
* contrastive_all21_s: the same with all 21 classes present and anchored (worst case for the bank reads);
  contrastive_paper_s: the paper variant on the step's outputs (it enqueues far more keys).

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from contextlib import contextmanager

# Sleeping instead of spinning OpenMP threads: on a CPU shared with other processes, spinning
# threads make many-small-op code 10x slower (measured here: contrastive 1.0 s vs 0.07 s under load 5).
# Must be set before torch starts its OpenMP runtime; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F

from u2pl_ray.config.schema import MethodConfig, ModelConfig
from u2pl_ray.method import (
    U2PL,
    MethodContext,
    StepBatch,
    contrastive_loss,
    downsample_nearest,
    full_res_masks,
    generator_sampler,
    select,
    strong_augment,
)
from u2pl_ray.method.memory_bank import MemoryBank, pack_keys
from u2pl_ray.method.supervised import upsample
from u2pl_ray.method.thresholds import alpha_t, drop_percent, entropy_from_logits, percentiles
from u2pl_ray.model import build_model

NUM_CLASSES, BATCH, SIZE, DIM = 21, 4, 257, 256


def voc_like_labels(batch: int, size: int, g: torch.Generator, classes: list[int] | None = None) -> torch.Tensor:
    """Background with 1-3 object rectangles per image and a 255 boundary ring around each."""
    label = torch.zeros(batch, size, size, dtype=torch.long)
    for b in range(batch):
        for k in range(int(torch.randint(1, 4, (1,), generator=g))):
            c = classes[k % len(classes)] if classes else int(torch.randint(1, NUM_CLASSES, (1,), generator=g))
            y, x = torch.randint(0, size // 2, (2,), generator=g).tolist()
            h, w = torch.randint(size // 6, size // 2, (2,), generator=g).tolist()
            label[b, y : y + h, x : x + w] = 255
            label[b, y + 3 : y + h - 3, x + 3 : x + w - 3] = c
    return label


def fill_bank(bank: MemoryBank, g: torch.Generator) -> None:
    for c, cap in enumerate(bank.capacities):
        bank.enqueue(pack_keys(torch.randn(cap, bank.dim, generator=g), torch.full((cap,), c)))


class Phases:
    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.total[name] += time.perf_counter() - start


def timed_contrastive(variant, bank, rep, rep_t, pred_t, label_l, pseudo, entropy_u, alpha, g):
    """masks + selection + bank update + loss, forward and backward to the features (not the percentiles)."""
    cfg = MethodConfig(variant=variant)
    rep = rep.detach().clone().requires_grad_(True)
    low_t, high_t = percentiles(entropy_u[pseudo != 255], [alpha, 100 - alpha])  # timed with the entropy
    start = time.perf_counter()
    low, high = full_res_masks(label_l, pseudo, entropy_u, low_t, high_t, variant=variant)
    small = downsample_nearest([torch.cat([label_l, pseudo]), low, high], tuple(rep.shape[-2:]))
    sel = select(
        torch.softmax(pred_t, 1),
        *small,
        num_labeled=label_l.shape[0],
        variant=variant,
        anchor_threshold=cfg.anchor_threshold,
        negative_threshold=cfg.negative_threshold,
        low_rank=cfg.low_rank,
        high_rank=cfg.high_rank,
    )
    res = contrastive_loss(
        rep,
        rep_t,
        sel,
        bank,
        variant=variant,
        num_queries=cfg.num_queries,
        num_negatives=cfg.num_negatives,
        temperature=cfg.temperature,
        sampler=generator_sampler(g),
    )
    res.loss.backward()
    return time.perf_counter() - start, res


def time_reference(repeats, rep, rep_t, pred_t, label_l, pseudo, entropy_u, alpha, g) -> float:
    """Best time of the literal official-style reference on the same inputs (banks as CPU lists)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from method_reference import official_contrastive_reference, official_inputs

    cfg = MethodConfig()
    caps = [cfg.bank_size_class0] + [cfg.bank_size] * (NUM_CLASSES - 1)
    bank = [[torch.randn(cap, DIM, generator=g)] for cap in caps]
    prob = torch.softmax(pred_t, 1)
    times = []
    for _ in range(repeats):
        leaf = rep.detach().clone().requires_grad_(True)
        start = time.perf_counter()
        onehot_l, onehot_u, low, high = official_inputs(
            label_l, pseudo, entropy_u, alpha, NUM_CLASSES, tuple(rep.shape[-2:])
        )
        _, loss, _ = official_contrastive_reference(
            leaf,
            onehot_l,
            onehot_u,
            prob[:BATCH],
            prob[BATCH:],
            low,
            high,
            bank,
            caps,
            rep_t,
            low_rank=cfg.low_rank,
            high_rank=cfg.high_rank,
            anchor_threshold=cfg.anchor_threshold,
            negative_threshold=cfg.negative_threshold,
            num_queries=cfg.num_queries,
            num_negatives=cfg.num_negatives,
            temperature=cfg.temperature,
            sampler=lambda high_, count: torch.randint(high_, (count,), generator=g),
        )
        loss.backward()
        times.append(time.perf_counter() - start)
    return round(min(times), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet101_deep")
    parser.add_argument("--steps", type=int, default=1, help="timed steps after one warm-up step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the U2PL-specific parts (best is reported)")
    parser.add_argument("--logit-scale", type=float, default=8.0, help="classifier output scale (confidence)")
    parser.add_argument(
        "--with-reference",
        action="store_true",
        help="also time tests/method_reference.py (the official algorithm written literally: "
        "per-class cat queues, a bank clone per read) on the step's outputs",
    )
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)

    model_cfg = ModelConfig(backbone=args.backbone, pretrained=None, sync_bn=False)
    student, teacher = build_model(model_cfg, NUM_CLASSES), build_model(model_cfg, NUM_CLASSES)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad_(False)

    def sharpen(module, inputs, out):
        return {**out, "pred": out["pred"] * args.logit_scale}

    captured: dict[str, list] = defaultdict(list)
    student.register_forward_hook(sharpen)
    teacher.register_forward_hook(sharpen)
    student.register_forward_hook(lambda m, i, o: captured["student"].append(o))
    teacher.register_forward_hook(lambda m, i, o: captured["teacher"].append(o))

    phases = Phases()
    cfg = MethodConfig()  # official VOC defaults
    step = U2PL(
        cfg,
        MethodContext(num_classes=NUM_CLASSES, rep_dim=DIM, total_epochs=80, iters_per_epoch=100, seed=0, phase=phases),
    )
    fill_bank(step.memory_bank, g)
    opt = torch.optim.SGD(student.parameters(), lr=1e-3, momentum=0.9)
    image_l = torch.randn(BATCH, 3, SIZE, SIZE, generator=g)
    image_u = torch.randn(BATCH, 3, SIZE, SIZE, generator=g)
    label_l = voc_like_labels(BATCH, SIZE, g)

    step_times, metrics = [], {}
    for i in range(args.steps + 1):
        if i == 1:
            phases.total.clear()
        captured.clear()
        start = time.perf_counter()
        student.train()
        loss, metrics = step.losses(student, teacher, StepBatch(image_l, label_l, image_u), epoch=1, iteration=100 + i)
        with phases("backward"):
            opt.zero_grad()
            loss.backward()
        with phases("optimizer_and_ema"):
            opt.step()
            step.update_teacher(teacher, student, epoch=1, iteration=100 + i)
        if i > 0:
            step_times.append(time.perf_counter() - start)
    step_s = sum(step_times) / len(step_times)
    per_step = {k: v / args.steps for k, v in phases.total.items()}

    # The U2PL-specific work on this step's outputs, timed alone; best of --repeats (shared CPU).
    with torch.no_grad():
        pseudo = torch.softmax(upsample(captured["teacher"][0]["pred"], (SIZE, SIZE)), 1).max(1)[1]
        confidence = torch.rand(BATCH, SIZE, SIZE, generator=g)
        out_t = captured["teacher"][1]
        pred_t = out_t["pred"].float()
    rep = captured["student"][-1]["rep"]
    alpha = alpha_t(1, 80, cfg.low_entropy_threshold)
    drop = drop_percent(1, 80, cfg.drop_percent)

    def entropy_and_thresholds() -> torch.Tensor:
        entropy_u = entropy_from_logits(upsample(pred_t[BATCH:], (SIZE, SIZE)))
        percentiles(entropy_u[pseudo != 255], [drop, alpha, 100 - alpha])
        return entropy_u

    def cutmix() -> None:
        strong_augment(image_u, pseudo, confidence, "cutmix", g)

    entropy_u = entropy_and_thresholds()
    paper_bank = MemoryBank(step.memory_bank.capacities, DIM)
    fill_bank(paper_bank, g)
    # Worst case: every class present and confidently predicted in labelled image 0 and unlabelled image 0.
    all_l = voc_like_labels(BATCH, SIZE, g)
    grid = torch.arange(NUM_CLASSES).repeat_interleave((SIZE * SIZE) // NUM_CLASSES + 1)[: SIZE * SIZE]
    all_l[0] = grid.view(SIZE, SIZE)
    all_u = all_l.flip(0)
    small = F.interpolate(torch.cat([all_l, all_u]).unsqueeze(1).float(), size=rep.shape[-2:], mode="nearest")
    logits = (
        4 * F.one_hot(small[:, 0].long().masked_fill(small[:, 0] == 255, 0), NUM_CLASSES).permute(0, 3, 1, 2).float()
    )
    logits = logits + torch.randn(logits.shape, generator=g)
    entropy_rand = torch.rand(BATCH, SIZE, SIZE, generator=g)

    runs: dict[str, list[float]] = defaultdict(list)
    found = {}
    for _ in range(args.repeats):
        for name, fn in (("strong_aug", cutmix), ("entropy_thresholds", entropy_and_thresholds)):
            start = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - start)
        for name, args_ in (
            ("contrastive", ("official", step.memory_bank, rep, out_t["rep"], pred_t, label_l, pseudo, entropy_u)),
            ("contrastive_paper", ("paper", paper_bank, rep, out_t["rep"], pred_t, label_l, pseudo, entropy_u)),
            (
                "contrastive_all21",
                ("official", step.memory_bank, rep, out_t["rep"], logits, all_l, all_u, entropy_rand),
            ),
        ):
            elapsed, found[name] = timed_contrastive(*args_, alpha, g)
            runs[name].append(elapsed)
    best = {k: min(v) for k, v in runs.items()}
    median = {k: sorted(v)[len(v) // 2] for k, v in runs.items()}
    res, res_paper, res_worst = found["contrastive"], found["contrastive_paper"], found["contrastive_all21"]
    contra_s, paper_s, worst_s = best["contrastive"], best["contrastive_paper"], best["contrastive_all21"]
    extra = best["strong_aug"] + best["entropy_thresholds"] + contra_s

    reference_s = None
    if args.with_reference:
        reference_s = time_reference(args.repeats, rep, out_t["rep"], pred_t, label_l, pseudo, entropy_u, alpha, g)

    result = {
        "step_s": round(step_s, 4),
        "u2pl_extra_s": round(extra, 4),
        "u2pl_share": round(extra / step_s, 5),
        "contrastive_s": round(contra_s, 4),
        "contrastive_terms": res.terms,
        "contrastive_new_keys": res.new_keys,
        "contrastive_all21_s": round(worst_s, 4),
        "contrastive_all21_terms": res_worst.terms,
        "contrastive_paper_s": round(paper_s, 4),
        "contrastive_paper_terms": res_paper.terms,
        "contrastive_paper_new_keys": res_paper.new_keys,
        "reference_contrastive_s": reference_s,
        "u2pl_parts_best_s": {k: round(v, 4) for k, v in sorted(best.items())},
        "u2pl_parts_median_s": {k: round(v, 4) for k, v in sorted(median.items())},
        "step_phases_s": {k: round(v, 4) for k, v in sorted(per_step.items())},
        "step_metrics": {k: round(v, 4) for k, v in metrics.items()},
        "backbone": args.backbone,
        "shapes": {
            "classes": NUM_CLASSES,
            "batch": f"{BATCH}+{BATCH}",
            "input": SIZE,
            "features": list(rep.shape[-2:]),
            "dim": DIM,
            "bank_rows": sum(step.memory_bank.count),
        },
        "threads": args.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "steps": args.steps,
        "load_avg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],  # at start, at end
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
