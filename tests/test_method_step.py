"""The whole U2PL iteration on a tiny network with the model's output contract."""

import pytest
import torch
from torch import nn

from u2pl_ray.config.schema import MethodConfig
from u2pl_ray.method import U2PL, MethodContext, StepBatch, SupOnly

C, D = 4, 8


class TinySeg(nn.Module):
    """Stride-4 'pred' and 'rep' (and optional 'aux') like the real model, with BN and dropout."""

    def __init__(self, aux: bool = False):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Dropout2d(0.1),
        )
        self.cls = nn.Conv2d(16, C, 1)
        self.rep = nn.Conv2d(16, D, 1)
        self.aux = nn.Conv2d(16, C, 1) if aux else None

    def forward(self, x):
        f = self.body(x)
        out = {"pred": self.cls(f), "rep": self.rep(f)}
        if self.aux is not None:
            out["aux"] = self.aux(f)
        return out


def _data(seed: int, b: int = 2, size: int = 32):
    """Images whose colour encodes the class of each quadrant, so a tiny net can learn them."""
    g = torch.Generator().manual_seed(seed)

    def batch():
        label = torch.zeros(b, size, size, dtype=torch.long)
        half = size // 2
        for i in range(b):
            for qy in range(2):
                for qx in range(2):
                    label[i, qy * half : (qy + 1) * half, qx * half : (qx + 1) * half] = int(
                        torch.randint(C, (1,), generator=g)
                    )
        palette = torch.tensor([[1.0, -1, 0], [-1, 1, 0], [0, 0, 1], [1, 1, -1]])
        image = palette[label].permute(0, 3, 1, 2) + 0.3 * torch.randn(b, 3, size, size, generator=g)
        return image, label

    image_l, label_l = batch()
    label_l[:, :2] = 255
    image_u, _ = batch()
    return image_l, label_l, image_u


def _setup(seed=0, aux=False, **cfg_kw):
    kw = dict(sup_only_epochs=1, num_queries=16, num_negatives=8, bank_size_class0=200, bank_size=100)
    kw.update(cfg_kw)
    cfg = MethodConfig(**kw)
    torch.manual_seed(seed)
    student, teacher = TinySeg(aux), TinySeg(aux)
    for p in teacher.parameters():
        p.requires_grad_(False)
    calls = []

    def gather(x):
        calls.append(x.shape[0])
        return x

    ctx = MethodContext(num_classes=C, rep_dim=D, total_epochs=4, iters_per_epoch=5, gather=gather, seed=seed)
    step = SupOnly(cfg, ctx) if cfg.name == "supervised" else U2PL(cfg, ctx)
    return cfg, student, teacher, step, calls


def _train(student, teacher, step, epochs, data, lr=0.05, start_epoch=0):
    opt = torch.optim.SGD(list(student.parameters()), lr=lr, momentum=0.9)
    history = []
    for epoch in range(start_epoch, start_epoch + epochs):
        for it in range(step.iters_per_epoch):
            iteration = epoch * step.iters_per_epoch + it
            student.train()
            loss, metrics = step.losses(student, teacher, StepBatch(*data), epoch=epoch, iteration=iteration)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step.update_teacher(teacher, student, epoch=epoch, iteration=iteration)
            history.append(metrics)
    return history


def test_semi_steps_lower_the_loss_and_report_metrics():
    cfg, student, teacher, step, calls = _setup()
    data = _data(0)
    history = _train(student, teacher, step, 3, data)
    warm, semi = history[:5], history[5:]
    assert all(m["unsup"] == 0 and m["contra"] == 0 for m in warm)
    assert semi[0]["sup"] < warm[0]["sup"]
    first = sum(m["total"] for m in semi[:3]) / 3
    last = sum(m["total"] for m in semi[-3:]) / 3
    assert last < first
    for key in (
        "sup",
        "unsup",
        "contra",
        "contra_loss",
        "total",
        "drop_percent",
        "alpha_t",
        "reliable_share",
        "strong_aug",
        "new_keys",
        "valid_classes",
        "contra_terms",
        "unsup_threshold",
    ):
        assert key in semi[-1]
    assert any(m["strong_aug"] == 1.0 for m in semi) and any(m["strong_aug"] == 0.0 for m in semi)
    assert all(m["contra"] == pytest.approx(m["contra_loss"] * 1.0 * 0.25, rel=1e-6) for m in semi)
    assert semi[0]["drop_percent"] == 85 and semi[-1]["drop_percent"] == 90  # epochs 1 and 2 of 4
    assert 0.5 < semi[0]["reliable_share"] <= 0.85
    assert sum(m["new_keys"] for m in semi) > 0 and step.memory_bank.count[0] > 0
    assert len(calls) == len(semi)  # one gather per semi step, none in the warm-up
    assert teacher.training  # the official loop leaves the teacher in train mode


def test_paper_variant_scales_by_contra_weight_only():
    cfg, student, teacher, step, _ = _setup(variant="paper", contra_weight=0.1)
    history = _train(student, teacher, step, 2, _data(1))
    semi = history[5:]
    assert any(m["contra_loss"] > 0 for m in semi)
    assert all(m["contra"] == pytest.approx(m["contra_loss"] * 0.1, rel=1e-6) for m in semi)


def test_same_seed_same_numbers_and_state_dict_resumes_exactly():
    data = _data(2)
    runs = []
    for _ in range(2):
        cfg, student, teacher, step, _ = _setup(seed=3)
        runs.append(_train(student, teacher, step, 2, data))
    assert runs[0] == runs[1]
    cfg, student, teacher, step, _ = _setup(seed=4)
    assert _train(student, teacher, step, 2, data) != runs[0]

    # continue a run, and resume a fresh object (other seed) from its state: same numbers
    cfg, student, teacher, step, _ = _setup(seed=3)
    _train(student, teacher, step, 2, data)
    saved = (step.state_dict(), student.state_dict(), teacher.state_dict())
    saved = [{k: v.clone() if torch.is_tensor(v) else v for k, v in d.items()} for d in saved[1:]], saved[0]
    torch.manual_seed(5)  # dropout draws come from the global generator
    continued = _train(student, teacher, step, 1, data, start_epoch=2)

    cfg, student2, teacher2, step2, _ = _setup(seed=99)
    step2.load_state_dict(saved[1])
    student2.load_state_dict(saved[0][0])
    teacher2.load_state_dict(saved[0][1])
    torch.manual_seed(5)
    resumed = _train(student2, teacher2, step2, 1, data, start_epoch=2)
    assert resumed == continued


def test_epoch_s_teacher_equals_student_during_the_forwards():
    cfg, student, teacher, step, _ = _setup(sup_only_epochs=0)
    seen = {}

    def hook(module, args, out):
        seen["weight"] = module.weight.detach().clone()

    h = teacher.cls.register_forward_hook(hook)
    step.losses(student, teacher, StepBatch(*_data(0)), epoch=0, iteration=0)
    h.remove()
    assert torch.equal(seen["weight"], student.cls.weight)


def test_warmup_keeps_every_head_in_the_graph_and_updates_teacher_bn_only():
    cfg, student, teacher, step, calls = _setup(aux=True)
    bn_before = teacher.body[1].running_mean.clone()
    w_before = teacher.cls.weight.clone()
    loss, metrics = step.losses(student, teacher, StepBatch(*_data(0)), epoch=0, iteration=0)
    loss.backward()
    assert student.rep.weight.grad is not None and student.aux.weight.grad is not None
    assert not torch.equal(teacher.body[1].running_mean, bn_before)
    assert torch.equal(teacher.cls.weight, w_before) and calls == []
    assert metrics["unsup"] == 0 and metrics["contra"] == 0


def test_supervised_mode_needs_no_teacher_nor_unlabelled_batch():
    cfg, student, _, step, _ = _setup(name="supervised", criterion="ohem", ohem_min_kept=50)
    image_l, label_l, _ = _data(0)
    loss, metrics = step.losses(student, None, StepBatch(image_l, label_l), epoch=3, iteration=15)
    loss.backward()
    assert metrics["total"] == metrics["sup"] > 0 and not step.state_dict() and not step.uses_teacher
    # every head is in the graph (DDP without unused-parameter search fails otherwise on 2+ workers)
    assert all(p.grad is not None for p in student.parameters())
    step.update_teacher(None, student, epoch=3, iteration=15)


def test_bf16_autocast_keeps_the_losses_in_float32():
    cfg, student, teacher, step, _ = _setup(sup_only_epochs=0)
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    loss, metrics = step.losses(student, teacher, StepBatch(*_data(0)), epoch=0, iteration=0, autocast=autocast)
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(v == v for v in metrics.values())  # no nan


def test_missing_rep_is_a_clear_error():
    cfg, student, teacher, step, _ = _setup(sup_only_epochs=0)

    class NoRep(TinySeg):
        def forward(self, x):
            return {"pred": super().forward(x)["pred"]}

    with pytest.raises(KeyError, match="rep"):
        step.losses(NoRep(), NoRep(), StepBatch(*_data(0)), epoch=0, iteration=0)


def test_gate_is_drawn_every_semi_iteration_even_without_augmentation():
    cfg, student, teacher, step, _ = _setup(strong_aug="none", sup_only_epochs=0, contrastive=False)
    reference = torch.Generator().manual_seed(0)  # the step's aug stream for seed 0
    for i in range(3):
        _, metrics = step.losses(student, teacher, StepBatch(*_data(0)), epoch=0, iteration=i)
        torch.rand((), generator=reference)
        assert metrics["strong_aug"] == 0.0
        assert torch.equal(step.aug_generator.get_state(), reference.get_state())
