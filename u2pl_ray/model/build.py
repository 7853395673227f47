"""`build_model(cfg)`: the one place a network is put together from the model config."""

from __future__ import annotations

import logging

from torch import nn

from u2pl_ray.config.schema import ModelConfig
from u2pl_ray.model.backbones import EfficientNetLite0, TimmBackbone, TinyBackbone, TorchvisionResNet
from u2pl_ray.model.base import Backbone
from u2pl_ray.model.decoder import AuxHead, DeepLabV3PlusDecoder
from u2pl_ray.model.resnet_deep import resnet101_deep
from u2pl_ray.model.segmentation import SegmentationModel
from u2pl_ray.model.weights import load_backbone_weights

log = logging.getLogger(__name__)
TIMM_PREFIX = "timm:"


def build_backbone(cfg: ModelConfig) -> Backbone:
    if cfg.backbone == "resnet101_deep":
        return resnet101_deep(cfg.output_stride, cfg.multi_grid)
    if cfg.backbone.startswith(TIMM_PREFIX):
        return TimmBackbone(cfg.backbone[len(TIMM_PREFIX) :], cfg.output_stride)
    if cfg.backbone == "resnet101":
        return TorchvisionResNet(101, cfg.output_stride)
    if cfg.backbone == "resnet50":
        return TorchvisionResNet(50, cfg.output_stride)
    if cfg.backbone == "resnet18":
        return TorchvisionResNet(18, cfg.output_stride)
    if cfg.backbone == "efficientnet_lite0":
        return EfficientNetLite0(cfg.output_stride)
    if cfg.backbone == "tiny":
        return TinyBackbone(cfg.output_stride)
    raise ValueError(f"unknown model.backbone {cfg.backbone!r}")


def build_model(cfg: ModelConfig, num_classes: int | None = None) -> SegmentationModel:
    """DeepLabv3+ on the configured backbone, with the backbone weights of `cfg.pretrained` loaded.

    `num_classes` (from the dataset manifest) and `cfg.num_classes` must agree when both are given.
    The load report is logged and kept as `model.weights_report` (None without weights).
    """
    if num_classes is None:
        num_classes = cfg.num_classes
    elif cfg.num_classes is not None and cfg.num_classes != num_classes:
        raise ValueError(f"model.num_classes={cfg.num_classes} but the dataset has {num_classes} classes")
    if num_classes is None or num_classes < 2:
        raise ValueError(f"number of classes must be >= 2, given {num_classes} (model.num_classes or the dataset)")
    backbone = build_backbone(cfg)
    decoder = DeepLabV3PlusDecoder(
        deep_channels=backbone.deep_channels,
        low_in_channels=backbone.low_channels,
        num_classes=num_classes,
        channels=cfg.decoder_channels,
        low_channels=cfg.low_level_channels,
        dilations=tuple(cfg.aspp_dilations),
        dropout=cfg.dropout,
        rep_dim=cfg.rep_dim if cfg.rep_head else None,
    )
    aux = AuxHead(backbone.aux_channels, num_classes, cfg.decoder_channels, cfg.dropout) if cfg.aux_head else None
    model = SegmentationModel(backbone, decoder, aux)
    if cfg.pretrained:
        report = load_backbone_weights(model, cfg.pretrained)
        level = logging.WARNING if report.missing else logging.INFO
        log.log(level, "backbone %s: %s", cfg.backbone, report.summary())
        model.weights_report = report
    return model


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """SyncBatchNorm everywhere, keeping timm's fused BN+activation layers intact.

    torch's own converter turns timm's BatchNormAct2d (EfficientNet) into a plain SyncBatchNorm and
    so silently drops the activation; timm's converter handles both kinds.
    """
    from timm.layers import convert_sync_batchnorm as timm_convert

    return timm_convert(model)
