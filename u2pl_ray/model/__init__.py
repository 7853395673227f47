"""DeepLabv3+ for U2PL: the official deep-stem ResNet-101 and lighter backbones (spec §2)."""

from u2pl_ray.model.build import build_backbone, build_model, convert_sync_batchnorm
from u2pl_ray.model.segmentation import SegmentationModel
from u2pl_ray.model.weights import LoadReport, load_backbone_weights, read_state_dict

__all__ = [
    "LoadReport",
    "SegmentationModel",
    "build_backbone",
    "build_model",
    "convert_sync_batchnorm",
    "load_backbone_weights",
    "read_state_dict",
]
