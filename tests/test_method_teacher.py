import pytest
import torch
from torch import nn

from u2pl_ray.config.schema import MethodConfig
from u2pl_ray.method import U2PL, MethodContext
from u2pl_ray.method.teacher import copy_student_into_teacher, ema_decay, ema_update, poly_lr, set_poly_lr


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def test_ema_decay_schedule_numbers():
    # S = 1, L = 100 iterations per epoch: n counts from the first step of epoch S
    assert ema_decay(100, 100, 1, 0.99) == 0.0
    assert ema_decay(101, 100, 1, 0.99) == 0.5
    assert ema_decay(102, 100, 1, 0.99) == pytest.approx(2 / 3)
    assert ema_decay(199, 100, 1, 0.99) == pytest.approx(0.99)  # last step of epoch S
    assert ema_decay(200, 100, 1, 0.99) == 0.99  # first step of S+1: min(1 - 1/101, 0.99)
    # Cityscapes 1/2: L = 93 -> 0.9894 at the first step of S+1, 0.99 six steps later
    assert ema_decay(186, 93, 1, 0.99) == pytest.approx(1 - 1 / 94)
    assert ema_decay(192, 93, 1, 0.99) == 0.99 and ema_decay(191, 93, 1, 0.99) < 0.99
    assert ema_decay(5, 10, 0, 0.99) == pytest.approx(1 - 1 / 6)  # S = 0


def test_ema_update_is_the_plain_float32_expression():
    teacher, student = _net(0), _net(1)
    t0 = [p.detach().clone() for p in teacher.parameters()]
    s0 = [p.detach().clone() for p in student.parameters()]
    ema_update(teacher, student, 0.99)
    for t, a, b in zip(teacher.parameters(), t0, s0):
        assert torch.equal(t, 0.99 * a + (1 - 0.99) * b)
    # epoch S: the official teacher *is* the student, so the result is d*s + (1-d)*s, not s
    ema_update(teacher, student, 2 / 3, teacher_is_student=True)
    diffs = 0
    for t, b in zip(teacher.parameters(), s0):
        expected = 2 / 3 * b + (1 - 2 / 3) * b
        assert torch.equal(t, expected)
        diffs += int((expected != b).sum())
    assert diffs > 0  # the rounding the official code produces


def test_update_teacher_follows_the_epochs_and_leaves_buffers_alone():
    cfg = MethodConfig(sup_only_epochs=1, ema_decay=0.99)
    step = U2PL(cfg, MethodContext(num_classes=2, rep_dim=4, total_epochs=3, iters_per_epoch=10))
    teacher, student = _net(0), _net(1)
    teacher[1].running_mean.fill_(3.0)
    before = [p.detach().clone() for p in teacher.parameters()]
    step.update_teacher(teacher, student, epoch=0, iteration=9)  # warm-up: nothing
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    step.update_teacher(teacher, student, epoch=1, iteration=10)  # n = 0: decay 0 -> student
    assert all(torch.equal(a, b) for a, b in zip(student.parameters(), teacher.parameters()))
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    prev = [p.detach().clone() for p in teacher.parameters()]
    step.update_teacher(teacher, student, epoch=2, iteration=20)  # n = 10: min(1 - 1/11, 0.99)
    d = 1 - 1 / 11
    for t, a, s in zip(teacher.parameters(), prev, student.parameters()):
        assert torch.equal(t, d * a + (1 - d) * s)
    assert (teacher[1].running_mean == 3.0).all()  # BN buffers are never averaged


def test_copy_student_into_teacher_copies_parameters_only():
    teacher, student = _net(0), _net(1)
    teacher[1].running_var.fill_(7.0)
    copy_student_into_teacher(teacher, student)
    assert all(torch.equal(a, b) for a, b in zip(student.parameters(), teacher.parameters()))
    assert (teacher[1].running_var == 7.0).all()
    assert teacher[0].weight.data_ptr() != student[0].weight.data_ptr()  # values, not storage
    with pytest.raises(ValueError, match="not the same network"):
        copy_student_into_teacher(nn.Linear(2, 2), _net(0))


def test_poly_lr_is_zero_based_and_stateless():
    assert poly_lr(0.01, 0, 1000, 0.9) == 0.01
    assert poly_lr(0.01, 500, 1000, 0.9) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 1000, 1000, 0.9) == 0.0
    params = [nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD([{"params": params[:1], "lr": 1.0}, {"params": params[1:], "lr": 1.0}], lr=1.0)
    lrs = set_poly_lr(opt, [0.001, 0.01], 250, 1000, 0.9)
    assert [g["lr"] for g in opt.param_groups] == lrs == [0.001 * 0.75**0.9, 0.01 * 0.75**0.9]
    # a "resumed" optimiser with new param-group dicts gets the same lr from the iteration alone
    opt2 = torch.optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=5.0)
    opt2.load_state_dict(opt.state_dict())
    assert set_poly_lr(opt2, [0.001, 0.01], 251, 1000, 0.9) == [poly_lr(b, 251, 1000, 0.9) for b in (0.001, 0.01)]
