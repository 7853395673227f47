"""Every shipped config loads, and the paper settings carry the official hyper-parameters (spec §8)."""

from pathlib import Path

import pytest

from u2pl_ray.config import load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("path", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_config_loads(path):
    load_config(CONFIGS / path)


def test_voc_settings_are_the_official_ones():
    for name in ("u2pl_r101-os8_4xb4-80e_voc-classic-513.yaml", "u2pl_r101-os8_4xb4-80e_voc-blender-513.yaml"):
        cfg = load_config(CONFIGS / name)
        assert (cfg.scaling.num_workers, cfg.data.batch_size, cfg.schedule.epochs, cfg.data.crop_size) == (
            4,
            4,
            80,
            513,
        )
        assert (cfg.optim.lr, cfg.optim.head_lr_mult, cfg.optim.weight_decay) == (0.001, 10, 1e-4)
        assert (cfg.method.sup_only_epochs, cfg.method.criterion, cfg.model.aux_head) == (1, "ce", False)
        assert cfg.method.contra_grad_scale == 0.25 and cfg.method.variant == "official"
        assert cfg.eval.mode == "center" and cfg.data.label_pad_value == 0


def test_cityscapes_settings_are_the_official_ones():
    cfg = load_config(CONFIGS / "u2pl_r101-os8_8xb2-200e_cityscapes-769.yaml")
    assert (cfg.scaling.num_workers, cfg.data.batch_size, cfg.schedule.epochs, cfg.data.crop_size) == (8, 2, 200, 769)
    assert (cfg.optim.lr, cfg.optim.head_lr_mult, cfg.optim.weight_decay) == (0.01, 1, 5e-4)
    assert (cfg.method.sup_only_epochs, cfg.method.criterion, cfg.model.aux_head) == (0, "ohem", True)
    assert (cfg.method.ohem_thresh, cfg.method.ohem_min_kept, cfg.method.aux_weight) == (0.7, 100000, 0.4)
    assert cfg.method.contra_grad_scale == 0.125


def test_split_is_a_field_not_a_file():
    cfg = load_config(CONFIGS / "u2pl_r101-os8_4xb4-80e_voc-classic-513.yaml", ["data.split='92'"])
    assert cfg.data.split == "92"


def test_unimatch_settings_are_the_official_ones():
    voc = load_config(CONFIGS / "unimatch_r101-os16_4xb2-80e_voc-classic-321.yaml")
    city = load_config(CONFIGS / "unimatch_r101-os16_4xb2-240e_cityscapes-801.yaml")
    for cfg in (voc, city):
        assert cfg.method.name == "unimatch" and cfg.method.fp_dropout == 0.5
        assert (cfg.model.output_stride, cfg.model.aspp_dilations, cfg.model.low_level_channels) == (
            16,
            [6, 12, 18],
            48,
        )
        assert not cfg.model.rep_head and not cfg.model.aux_head
        assert (cfg.optim.kind, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.9, 1e-4)
        assert (cfg.scaling.num_workers, cfg.data.batch_size) == (4, 2)
    assert (voc.schedule.epochs, voc.data.crop_size, voc.optim.lr, voc.optim.head_lr_mult) == (80, 321, 0.001, 10)
    assert (voc.method.conf_thresh, voc.method.criterion, voc.eval.mode) == (0.95, "ce", "whole")
    assert (city.schedule.epochs, city.data.crop_size, city.optim.lr, city.optim.head_lr_mult) == (240, 801, 0.005, 1)
    assert (city.method.conf_thresh, city.method.criterion, city.eval.mode) == (0.0, "ohem", "slide")
    assert (city.method.ohem_thresh, city.method.ohem_min_kept) == (0.7, 200000)
