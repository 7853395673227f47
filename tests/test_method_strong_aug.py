import torch

from u2pl_ray.method.strong_aug import box_masks, cutmix_box, gate, strong_augment


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_cutmix_box_follows_the_official_formula():
    g = _gen(3)
    for height, width in [(33, 33), (257, 257), (20, 31), (513, 513)]:
        widths = set()
        for _ in range(200):
            y0, y1, x0, x1 = cutmix_box(height, width, g)
            w, h = x1 - x0, y1 - y0
            widths.add(w)
            assert width // 2 + 1 <= w <= width - 1  # numpy randint(W/2+1, W): low truncated, high excluded
            assert h == round(height * width / 2 / w)  # half-to-even, as np.round
            assert x0 >= 0 and x1 <= width and y0 >= 0 and y1 <= height
        assert min(widths) < width // 2 + 1 + (width // 8) and max(widths) > width - 1 - (width // 8)


def test_cutmix_box_draw_order_is_width_x_y():
    g1, g2 = _gen(7), _gen(7)
    y0, y1, x0, x1 = cutmix_box(40, 50, g1)
    w = int(torch.randint(26, 50, (1,), generator=g2))
    h = round(40 * 50 / 2 / w)
    x = int(torch.randint(0, 50 - w + 1, (1,), generator=g2))
    y = int(torch.randint(0, 40 - h + 1, (1,), generator=g2))
    assert (y0, y1, x0, x1) == (y, y + h, x, x + w)


def test_cutmix_pastes_the_box_from_the_next_image_cyclically():
    b, h, w = 3, 12, 16
    image = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, h, w).clone()
    pseudo = torch.arange(b).view(b, 1, 1).expand(b, h, w).clone() + 10
    conf = torch.arange(b, dtype=torch.float32).view(b, 1, 1).expand(b, h, w).clone() / 10
    keep = box_masks(b, h, w, _gen(1), torch.device("cpu"))
    out_img, out_lab, out_conf = strong_augment(image, pseudo, conf, "cutmix", _gen(1))
    for i in range(b):
        nxt = (i + 1) % b
        inside = ~keep[i]
        assert 0.3 < inside.float().mean() < 0.7  # box area ~ H*W/2
        assert (out_img[i][:, inside] == nxt).all() and (out_img[i][:, ~inside] == i).all()
        assert (out_lab[i][inside] == nxt + 10).all() and (out_lab[i][~inside] == i + 10).all()
        assert torch.allclose(out_conf[i][inside], torch.tensor(nxt / 10))
    assert (pseudo[0] == 10).all()  # inputs untouched


def test_cutout_zeroes_the_box_and_ignores_its_labels():
    image = torch.ones(2, 3, 10, 10)
    pseudo = torch.zeros(2, 10, 10, dtype=torch.long)
    conf = torch.ones(2, 10, 10)
    keep = box_masks(2, 10, 10, _gen(5), torch.device("cpu"))
    out_img, out_lab, out_conf = strong_augment(image, pseudo, conf, "cutout", _gen(5))
    assert ((out_lab == 255) == ~keep).all()
    assert ((out_img == 0) == ~keep.unsqueeze(1)).all()
    assert ((out_conf == 0) == ~keep).all()


def test_classmix_keeps_a_random_half_of_each_images_classes():
    pseudo = torch.tensor([[[0, 1], [2, 3]], [[4, 4], [4, 4]], [[1, 2], [2, 5]]])
    image = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 3, 2, 2).clone()
    conf = torch.ones(3, 2, 2)
    out_img, out_lab, _ = strong_augment(image, pseudo, conf, "classmix", _gen(11))
    # n // 2 classes, as the official generate_class_mask: image 0: 4 classes -> 2 kept pixels;
    # image 1: 1 class -> 0 kept; image 2: 3 classes -> 1 class kept (1 or 2 pixels of it)
    kept = out_img[:, 0] == torch.arange(3).view(3, 1, 1).float()
    assert kept[0].sum() == 2 and kept[1].sum() == 0
    chosen2 = set(pseudo[2][kept[2]].tolist())
    assert len(chosen2) == 1 and all((pseudo[2] == c).sum() == kept[2][pseudo[2] == c].sum() for c in chosen2)
    assert (out_lab[1] == pseudo[2]).all()  # image 1 fully replaced by image 2


def test_gate_is_drawn_every_call_and_is_deterministic():
    g1, g2 = _gen(0), _gen(0)
    draws = [gate(0.5, g1) for _ in range(200)]
    assert 60 < sum(draws) < 140
    assert draws == [gate(0.5, g2) for _ in range(200)]
    g3 = _gen(0)
    before = g3.get_state().clone()
    gate(0.0, g3)  # a zero probability still consumes one draw
    assert not torch.equal(before, g3.get_state())


def test_none_leaves_the_batch_alone():
    image, pseudo, conf = torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long), torch.ones(2, 4, 4)
    g = _gen(0)
    state = g.get_state().clone()
    out = strong_augment(image, pseudo, conf, "none", g)
    assert out[0] is image and torch.equal(state, g.get_state())
