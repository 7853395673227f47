"""The contract between a backbone and the DeepLabv3+ decoder."""

from __future__ import annotations

import torch
from torch import nn

Features = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class Backbone(nn.Module):
    """A feature extractor returning `(low, aux, deep)`.

    `low` is at stride 4 (the decoder's skip connection), `deep` at the output stride (ASPP input),
    `aux` is the intermediate map the auxiliary head reads (ResNet layer3). A tuple, not a dict,
    so that tracing and export see a fixed structure.
    """

    low_channels: int
    aux_channels: int
    deep_channels: int
    output_stride: int

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename the keys of a weights file to this module's keys (identity by default)."""
        return state

    def forward(self, x: torch.Tensor) -> Features:  # pragma: no cover - abstract
        raise NotImplementedError


def dilations_for(output_stride: int) -> tuple[int, int]:
    """Dilation of the last two stages (stride-16 and stride-32 stages) for an output stride."""
    if output_stride == 8:
        return 2, 4
    if output_stride == 16:
        return 1, 2
    raise ValueError(f"model.output_stride must be 8 or 16, given {output_stride}")
