import torch
import torch.nn.functional as F
from method_reference import official_contrastive_reference, official_inputs, paper_contrastive_reference

from u2pl_ray.method.contrastive import contrastive_loss, generator_sampler, plan_positions
from u2pl_ray.method.contrastive_select import downsample_nearest, full_res_masks, membership, select
from u2pl_ray.method.memory_bank import MemoryBank
from u2pl_ray.method.thresholds import percentiles

HP = dict(low_rank=3, high_rank=20, anchor_threshold=0.3, negative_threshold=1.0)


def _blobs(batch, classes, size, g):
    """Labels made of a few rectangles of the given classes (VOC-like)."""
    lab = torch.full((batch, size, size), classes[0], dtype=torch.long)
    for b in range(batch):
        for _ in range(3):
            c = classes[int(torch.randint(len(classes), (1,), generator=g))]
            y, x = torch.randint(0, size - 6, (2,), generator=g).tolist()
            hh, ww = torch.randint(4, size // 2, (2,), generator=g).tolist()
            lab[b, y : y + hh, x : x + ww] = c
    return lab


def _batch(seed, num_classes=7, b_l=3, b_u=3, full=24, small=6, dim=8, classes=(0, 2, 5, 6)):
    g = torch.Generator().manual_seed(seed)
    label_l = _blobs(b_l, classes, full, g)
    label_l[0, -6:] = 255  # ignore pixels that survive the 4x nearest downsampling
    if b_l > 1:
        label_l[1, :, :5] = 255
    pseudo = _blobs(b_u, classes, full, g)
    entropy_u = torch.rand(b_u, full, full, generator=g)
    both = F.interpolate(torch.cat([label_l, pseudo]).unsqueeze(1).float(), size=(small, small), mode="nearest")
    onehot = F.one_hot(both[:, 0].long().clamp(max=num_classes - 1), num_classes).permute(0, 3, 1, 2).float()
    logits = 2.5 * onehot + torch.randn(b_l + b_u, num_classes, small, small, generator=g)
    prob = torch.softmax(logits, dim=1)
    rep = torch.randn(b_l + b_u, dim, small, small, generator=g)
    rep_t = rep + 0.3 * torch.randn(rep.shape, generator=g)
    return label_l, pseudo, entropy_u, prob, rep, rep_t


def _fast(variant, label_l, pseudo, entropy_u, prob, rep, rep_t, bank, alpha, sampler, q=16, n=5, neg_high=True):
    valid = pseudo != 255
    low_t, high_t = percentiles(entropy_u[valid], [alpha, 100 - alpha])
    low, high = full_res_masks(
        label_l, pseudo, entropy_u, low_t, high_t, variant=variant, negative_high_entropy=neg_high
    )
    labels_s, low_s, high_s = downsample_nearest([torch.cat([label_l, pseudo]), low, high], tuple(rep.shape[-2:]))
    sel = select(prob, labels_s, low_s, high_s, num_labeled=label_l.shape[0], variant=variant, **HP)
    return contrastive_loss(
        rep, rep_t, sel, bank, variant=variant, num_queries=q, num_negatives=n, temperature=0.5, sampler=sampler
    )


def _check_against_reference(variant, steps=3, alpha=20.0, neg_high=True, cutout=False, **batch_kw):
    caps = [40] + [25] * 6
    bank = MemoryBank(caps, 8)
    ref_bank = [[torch.zeros(0, 8)] for _ in caps]
    g_fast, g_ref = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    ref_sampler = lambda high, count: torch.randint(high, (count,), generator=g_ref)  # noqa: E731
    for step in range(steps):
        label_l, pseudo, entropy_u, prob, rep, rep_t = _batch(100 + step, **batch_kw)
        if cutout:  # CutOut leaves 255 in the pseudo-labels
            pseudo[0, 8:20, 4:16] = 255
            pseudo[-1, :12, 12:] = 255
        rep_fast = rep.clone().requires_grad_(True)
        rep_ref = rep.clone().requires_grad_(True)
        res = _fast(
            variant,
            label_l,
            pseudo,
            entropy_u,
            prob,
            rep_fast,
            rep_t,
            bank,
            alpha,
            generator_sampler(g_fast),
            neg_high=neg_high,
        )
        b_l = label_l.shape[0]
        if variant == "official":
            oh_l, oh_u, low_m, high_m = official_inputs(
                label_l, pseudo, entropy_u, alpha, prob.shape[1], (6, 6), negative_high_entropy=neg_high
            )
            new_keys, ref_loss, valid = official_contrastive_reference(
                rep_ref,
                oh_l,
                oh_u,
                prob[:b_l],
                prob[b_l:],
                low_m,
                high_m,
                ref_bank,
                caps,
                rep_t,
                num_queries=16,
                num_negatives=5,
                temperature=0.5,
                sampler=ref_sampler,
                **HP,
            )
        else:
            new_keys, ref_loss, valid = paper_contrastive_reference(
                rep_ref,
                label_l,
                pseudo,
                prob,
                entropy_u,
                alpha,
                ref_bank,
                caps,
                rep_t,
                num_queries=16,
                num_negatives=5,
                temperature=0.5,
                sampler=ref_sampler,
                **HP,
            )
        assert res.new_keys == sum(new_keys) and res.valid_classes == len(valid)
        for c in range(len(caps)):
            assert torch.equal(bank.logical(c), ref_bank[c][0]), f"step {step} class {c}"
        assert torch.allclose(res.loss, ref_loss, rtol=1e-5, atol=1e-6), (res.loss, ref_loss)
        (res.loss + rep_fast.sum() * 0).backward()
        (ref_loss + rep_ref.sum() * 0).backward()
        assert torch.allclose(rep_fast.grad, rep_ref.grad, rtol=1e-4, atol=1e-6)
        assert torch.equal(g_fast.get_state(), g_ref.get_state())  # same draws, same order
    return res


def test_official_matches_the_literal_reference():
    res = _check_against_reference("official", steps=3)
    assert res.terms > 0 and res.loss.item() > 0


def test_official_reference_late_alpha_and_batch_one():
    _check_against_reference("official", steps=2, alpha=2.5)
    _check_against_reference("official", steps=2, b_l=1, b_u=1, classes=(0, 1, 3))
    _check_against_reference("official", steps=2, neg_high=False, cutout=True)


def test_paper_matches_the_literal_reference():
    res = _check_against_reference("paper", steps=2, b_l=2, b_u=2)
    assert res.terms > 0


def test_onehot_quirk_batch_union_in_slot_zero():
    # labelled half: 2 samples of one row of 4 pixels
    label = torch.tensor([[[1, 3, 255, 0]], [[2, 3, 4, 255]]])
    official = membership(label, 2, 5, variant="official")
    as_sets = [set(official[0, :, 0, x].nonzero().flatten().tolist()) for x in range(4)]
    assert as_sets == [{1, 2}, {3}, set(), {0}]  # another sample's 255 counts as class 0
    assert not official[1].any()
    paper = membership(label, 2, 5, variant="paper")
    assert [set(paper[1, :, 0, x].nonzero().flatten().tolist()) for x in range(4)] == [{2}, {3}, {4}, set()]


def _crafted_selection(variant, classes_present=(0, 2, 5, 6)):
    """1 labelled + 1 unlabelled image of 1 x 4 pixels, one class per pixel, confident teacher."""
    num_classes = 7
    label = torch.tensor([[list(classes_present)], [list(classes_present)]])
    prob = F.one_hot(label, num_classes).permute(0, 3, 1, 2).float() * 0.8 + 0.2 / num_classes
    ones = torch.ones(2, 1, 4, dtype=torch.bool)
    return select(prob, label, ones, ones, num_labeled=1, variant=variant, **HP)


def test_index_mismatch_official_vs_paper():
    bank = MemoryBank([10] * 7, 8)
    bank.count = [3] * 7  # positions only need non-empty banks
    sel = _crafted_selection("official")
    positions, denom, valid = plan_positions(sel, bank, "official")
    # position 1 -> class 1 has no anchors (skipped), position 2 -> anchors/prototype of class 2 with
    # negatives of class 5, position 3 -> class 3 absent; all four count in the denominator
    assert positions == [(0, 0, 0), (2, 2, 5)] and denom == 4 and valid == 4
    sel_p = _crafted_selection("paper")
    positions, denom, _ = plan_positions(sel_p, bank, "paper")
    assert positions == [(0, 0, 0), (2, 2, 2), (5, 5, 5), (6, 6, 6)] and denom == 4


def test_labelled_negatives_only_in_paper_and_pseudo_label_condition_only_in_official():
    num_classes = 6
    # labelled pixel: GT 1, teacher ranks 1 > 2 > 3 (class 2 in the top 3 but not the label)
    # unlabelled pixel: pseudo-label 1, teacher ranks 1,0,5,4,... so class 4 is at rank 3
    logits = torch.tensor([[0.0, 5, 4, 3, -1, -2], [4.0, 5, -3, -2, 1, 2]]).view(2, num_classes, 1, 1)
    prob = torch.softmax(logits, dim=1)
    label = torch.tensor([1, 1]).view(2, 1, 1)
    ones = torch.ones(2, 1, 1, dtype=torch.bool)
    for variant in ("official", "paper"):
        sel = select(prob, label, ones, ones, num_labeled=1, variant=variant, **HP)
        pairs = sorted(zip(sel.neg_class.tolist(), sel.neg_flat.tolist()))
        if variant == "official":
            assert pairs == []  # labelled never; unlabelled needs pseudo-label == c AND rank(c) in [3, 20)
        else:
            labelled = [(c, 0) for c in (2, 3)]  # top-3 classes other than the label
            unlabelled = [(c, 1) for c in (4, 3, 2)]  # ranks 3, 4, 5 of the unlabelled pixel
            assert pairs == sorted(labelled + unlabelled)
    # official selects the unlabelled pixel for its pseudo-label when that label ranks >= 3
    logits_u = torch.tensor([5.0, -3, 4, 3, 2, 1]).view(1, num_classes, 1, 1)
    prob2 = torch.softmax(torch.cat([logits[:1], logits_u]), dim=1)
    sel = select(prob2, label, ones, ones, num_labeled=1, variant="official", **HP)
    assert list(zip(sel.neg_class.tolist(), sel.neg_flat.tolist())) == [(1, 1)]


def test_early_exit_updates_the_bank_and_draws_nothing():
    label = torch.zeros(2, 1, 4, dtype=torch.long)
    prob = torch.softmax(torch.randn(2, 5, 1, 4), dim=1)
    ones = torch.ones(2, 1, 4, dtype=torch.bool)
    sel = select(
        prob,
        label,
        ones,
        ones,
        num_labeled=1,
        variant="official",
        low_rank=0,
        high_rank=5,
        anchor_threshold=0.0,
        negative_threshold=1.0,
    )
    bank = MemoryBank([10] * 5, 3)
    rep = torch.randn(2, 3, 1, 4, requires_grad=True)
    calls = []
    res = contrastive_loss(
        rep,
        rep.detach(),
        sel,
        bank,
        variant="official",
        num_queries=4,
        num_negatives=2,
        temperature=0.5,
        sampler=lambda hi, n: calls.append((hi, n)),
    )
    assert res.loss.item() == 0.0 and res.valid_classes == 1 and calls == []
    assert res.new_keys > 0 and bank.count[0] > 0  # the official enqueues before the early exit
    res.loss.backward()
    assert rep.grad is not None


def test_sampler_call_order_is_anchor_then_negatives_per_position():
    label_l, pseudo, entropy_u, prob, rep, rep_t = _batch(5, classes=(0, 1, 2, 3))
    bank = MemoryBank([40] + [25] * 6, 8)
    bank.update(torch.cat([torch.randn(70, 8), torch.arange(7).repeat(10).float().unsqueeze(1)], dim=1))
    calls = []
    g = torch.Generator().manual_seed(0)

    def recording(high, count):
        calls.append((high, count))
        return torch.randint(high, (count,), generator=g)

    low_t, high_t = percentiles(entropy_u, [20.0, 80.0])
    low, high = full_res_masks(label_l, pseudo, entropy_u, low_t, high_t, variant="official")
    small = downsample_nearest([torch.cat([label_l, pseudo]), low, high], (6, 6))
    sel = select(prob, *small, num_labeled=3, variant="official", **HP)
    res = contrastive_loss(
        rep, rep_t, sel, bank, variant="official", num_queries=16, num_negatives=5, temperature=0.5, sampler=recording
    )
    positions, _, _ = plan_positions(sel, bank, "official")
    assert res.terms == len(positions) >= 2
    expected = []
    for anchor_cls, _, neg_cls in positions:
        expected += [(sel.anchor_counts[anchor_cls], 16), (bank.count[neg_cls], 80)]
    assert calls == expected


def test_hand_computed_loss_value():
    # 1 labelled + 1 unlabelled image of 1 x 2 pixels, classes 0 and 1, features on the axes
    label = torch.tensor([[[0, 1]], [[0, 1]]])
    prob = torch.tensor([[0.9, 0.1], [0.1, 0.9]]).T.reshape(1, 2, 1, 2).repeat(2, 1, 1, 1)
    rep = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2).repeat(2, 1, 1, 1).requires_grad_(True)
    ones = torch.ones(2, 1, 2, dtype=torch.bool)
    none = torch.zeros(2, 1, 2, dtype=torch.bool)
    sel = select(
        prob,
        label,
        ones,
        none,
        num_labeled=1,
        variant="paper",
        low_rank=1,
        high_rank=2,
        anchor_threshold=0.3,
        negative_threshold=1.0,
    )
    bank = MemoryBank([4, 4], 2)
    bank.update(torch.tensor([[0.0, 2.0, 0.0], [3.0, 0.0, 1.0]]))  # class 0 key (0,2), class 1 key (3,0)
    res = contrastive_loss(
        rep,
        rep.detach(),
        sel,
        bank,
        variant="paper",
        num_queries=1,
        num_negatives=1,
        temperature=0.5,
        sampler=lambda high, count: torch.zeros(count, dtype=torch.long),
    )
    # each class: cos(anchor, prototype) = 1, cos(anchor, negative) = 0 -> -log(e^2 / (e^2 + e^0))
    expected = torch.log1p(torch.exp(torch.tensor(-2.0)))
    assert res.new_keys == 0 and res.terms == 2
    assert torch.isclose(res.loss, expected)


def test_paper_negatives_without_entropy_filter_still_skip_ignored_pixels():
    label_l = torch.zeros(1, 2, 2, dtype=torch.long)
    pseudo = torch.tensor([[[0, 255], [1, 1]]])
    entropy = torch.rand(1, 2, 2)
    t = torch.tensor(0.5)
    _, high_p = full_res_masks(label_l, pseudo, entropy, t, t, variant="paper", negative_high_entropy=False)
    _, high_o = full_res_masks(label_l, pseudo, entropy, t, t, variant="official", negative_high_entropy=False)
    assert high_p[1].tolist() == [[True, False], [True, True]]
    assert high_o[1].all()
