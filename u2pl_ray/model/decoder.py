"""DeepLabv3+ decoder and auxiliary head of the official U2PL model (spec §2).

Differences from the DeepLabv3+ paper that the official model has and this one keeps: the
low-level branch is 256 channels wide (not 48), a representation head parallel to the classifier,
and two Dropout2d(0.1). All upsampling is bilinear with align_corners=True. PyTorch default init.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _upsample(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1, bias: bool = False) -> list[nn.Module]:
    pad = 0 if kernel == 1 else dilation
    return [
        nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=bias),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class ASPP(nn.Module):
    """Image pooling + 1x1 + three atrous 3x3 branches, each `channels` wide, concatenated."""

    def __init__(self, in_channels: int, channels: int = 256, dilations: tuple[int, ...] = (12, 24, 36)) -> None:
        super().__init__()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(in_channels, channels, 1))
        self.conv1x1 = nn.Sequential(*_conv_bn_relu(in_channels, channels, 1))
        self.atrous = nn.ModuleList(nn.Sequential(*_conv_bn_relu(in_channels, channels, 3, d)) for d in dilations)
        self.out_channels = channels * (2 + len(dilations))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = _upsample(self.pool(x), x.shape[-2:])
        return torch.cat([pooled, self.conv1x1(x), *(branch(x) for branch in self.atrous)], dim=1)


def _head(cin: int, width: int, out: int, dropout: float) -> nn.Sequential:
    """3x3 conv-BN-ReLU-Dropout twice, then a 1x1 conv: the classifier and representation heads."""
    return nn.Sequential(
        *_conv_bn_relu(cin, width, 3, bias=True),
        nn.Dropout2d(dropout),
        *_conv_bn_relu(width, width, 3, bias=True),
        nn.Dropout2d(dropout),
        nn.Conv2d(width, out, kernel_size=1),
    )


class DeepLabV3PlusDecoder(nn.Module):
    """ASPP on the deep features, fused with the stride-4 features; returns (logits, rep or None)."""

    def __init__(
        self,
        deep_channels: int,
        low_in_channels: int,
        num_classes: int,
        channels: int = 256,
        low_channels: int = 256,
        dilations: tuple[int, ...] = (12, 24, 36),
        dropout: float = 0.1,
        rep_dim: int | None = 256,
    ) -> None:
        super().__init__()
        self.aspp = ASPP(deep_channels, channels, dilations)
        self.head = nn.Sequential(*_conv_bn_relu(self.aspp.out_channels, channels, 3), nn.Dropout2d(dropout))
        self.low_conv = nn.Sequential(*_conv_bn_relu(low_in_channels, low_channels, 1, bias=True))
        fused = low_channels + channels
        self.classifier = _head(fused, channels, num_classes, dropout)
        self.representation = _head(fused, channels, rep_dim, dropout) if rep_dim else None

    def forward(self, low: torch.Tensor, deep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        low = self.low_conv(low)
        context = _upsample(self.head(self.aspp(deep)), low.shape[-2:])
        fused = torch.cat([low, context], dim=1)
        rep = self.representation(fused) if self.representation is not None else None
        return self.classifier(fused), rep


class AuxHead(nn.Module):
    """Official `Aux_Module`: 3x3 conv (bias)-BN-ReLU-Dropout2d, 1x1 conv to the classes."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *_conv_bn_relu(in_channels, channels, 3, bias=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(channels, num_classes, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
