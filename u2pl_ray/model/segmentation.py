"""The segmentation network: backbone + DeepLabv3+ decoder (+ auxiliary head)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from u2pl_ray.model.base import Backbone
from u2pl_ray.model.decoder import AuxHead, DeepLabV3PlusDecoder


class SegmentationModel(nn.Module):
    """`forward(x)` returns a dict: `pred` [B,C,h,w] logits at stride 4, `rep` [B,D,h,w] when the
    representation head exists, `aux` [B,C,h',w'] logits on the aux tap when the aux head exists.

    Nothing is upsampled to the input size: the losses do that (bilinear, align_corners=True).
    """

    def __init__(self, backbone: Backbone, decoder: DeepLabV3PlusDecoder, aux: AuxHead | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.aux = aux
        self.weights_report = None  # the LoadReport of the backbone weights, set by build_model

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride

    def forward(self, x: torch.Tensor, feature_dropout: float = 0.0) -> dict[str, torch.Tensor]:
        """`feature_dropout` > 0 adds UniMatch's feature-perturbation stream: one decoder pass over the
        clean features and a channel-dropout copy of them (stride-4 and deep features, in that order),
        whose results come back as `pred_fp` (and `rep_fp`)."""
        # Checked eagerly only: under tracing the shape is a tensor and the check would be baked in.
        if not torch.jit.is_tracing() and (x.dim() != 4 or x.shape[1] != 3):
            raise ValueError(f"SegmentationModel expects images [B,3,H,W], given shape {tuple(x.shape)}")
        low, aux_feat, deep = self.backbone(x)
        if feature_dropout:
            # dropout always on, as the official code builds a fresh nn.Dropout2d (train mode) per call
            low = torch.cat([low, F.dropout2d(low, feature_dropout, training=True)])
            deep = torch.cat([deep, F.dropout2d(deep, feature_dropout, training=True)])
        pred, rep = self.decoder(low, deep)
        out = {}
        if feature_dropout:
            pred, out["pred_fp"] = pred.chunk(2)
            if rep is not None:
                rep, out["rep_fp"] = rep.chunk(2)
        out["pred"] = pred
        if rep is not None:
            out["rep"] = rep
        if self.aux is not None:
            out["aux"] = self.aux(aux_feat)
        return out

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, head parameters): the official optimiser's two groups, the head
        (decoder + aux) being the one with the larger learning rate."""
        head = list(self.decoder.parameters())
        if self.aux is not None:
            head += list(self.aux.parameters())
        return list(self.backbone.parameters()), head
