"""Backbones besides the official deep-stem ResNet-101: torchvision ResNet-18/50/101 (standard stem),
EfficientNet-Lite0, any timm encoder (`timm:<name>`, CNNs and ViTs), and a tiny one for tests.

None of them downloads anything: weights come only through `load_backbone_weights`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet

from u2pl_ray.model.base import Backbone, Features, dilations_for
from u2pl_ray.model.efficientnet_keys import is_lukemelas_layout, lukemelas_to_timm


def _dilate_stage(stage: nn.Module, rate: int) -> None:
    """Turn a strided stage into a dilated one in place: stride 1, 3x3 convs dilated by `rate`."""
    for m in stage.modules():
        if isinstance(m, nn.Conv2d):
            if m.stride == (2, 2):
                m.stride = (1, 1)
            if m.kernel_size == (3, 3):
                m.dilation = (rate, rate)
                m.padding = (rate, rate)


class TorchvisionResNet(Backbone):
    """torchvision ResNet without avgpool/fc, keys as torchvision's (`conv1`, `bn1`, `layer1..4`).

    Taps: layer1 (stride 4) low-level, layer3 aux, layer4 deep. Bottleneck ResNets use torchvision's
    own dilation; BasicBlock ResNets (which torchvision refuses to dilate) are dilated in place.
    """

    def __init__(self, depth: int, output_stride: int = 8) -> None:
        super().__init__()
        self.output_stride = output_stride
        d3, d4 = dilations_for(output_stride)
        if depth in (50, 101):
            build = resnet.resnet50 if depth == 50 else resnet.resnet101
            net = build(weights=None, replace_stride_with_dilation=[False, d3 > 1, True])
            self.low_channels, self.aux_channels, self.deep_channels = 256, 1024, 2048
        elif depth == 18:
            net = resnet.resnet18(weights=None)
            if d3 > 1:
                _dilate_stage(net.layer3, d3)
            _dilate_stage(net.layer4, d4)
            self.low_channels, self.aux_channels, self.deep_channels = 64, 256, 512
        else:
            raise ValueError(f"torchvision ResNet depth must be 18, 50 or 101, given {depth}")
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> Features:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        aux = self.layer3(self.layer2(low))
        return low, aux, self.layer4(aux)


class EfficientNetLite0(Backbone):
    """timm `tf_efficientnet_lite0` (TF "same" padding, BN eps 1e-3: the layout of the TF-trained
    weights) as a feature extractor. Taps: 24 ch at stride 4, 112 ch (stride-16 stage) as aux,
    320 ch (last stage) as deep; the last two are dilated to the output stride.

    Its BatchNorms are timm's BatchNormAct2d; use `u2pl_ray.model.convert_sync_batchnorm`, not
    torch's, which would drop the fused activation.
    """

    TIMM_NAME = "tf_efficientnet_lite0"

    def __init__(self, output_stride: int = 8) -> None:
        super().__init__()
        import timm  # heavy import, only for this backbone

        self.output_stride = output_stride
        self.body = timm.create_model(
            self.TIMM_NAME, pretrained=False, features_only=True, out_indices=(1, 3, 4), output_stride=output_stride
        )
        self.low_channels, self.aux_channels, self.deep_channels = self.body.feature_info.channels()

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # Files come in the lukemelas/TF-port layout (the PyPI package) or in timm's own layout.
        if is_lukemelas_layout(state):
            state = lukemelas_to_timm(state, self.body.blocks)
        return {f"body.{k}": v for k, v in state.items()}

    def forward(self, x: torch.Tensor) -> Features:
        low, aux, deep = self.body(x)
        return low, aux, deep


class TinyBackbone(Backbone):
    """Four strided 3x3 conv-BN-ReLU layers, no weights: a network for fast tests."""

    def __init__(self, output_stride: int = 8, width: int = 16) -> None:
        super().__init__()
        self.output_stride = output_stride
        d3, _ = dilations_for(output_stride)

        def block(cin: int, cout: int, stride: int, dilation: int = 1) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        w = width
        self.stem = nn.Sequential(block(3, w, 2), block(w, w, 2))  # stride 4
        self.stage3 = block(w, 2 * w, 2)  # stride 8
        self.stage4 = block(2 * w, 4 * w, 1 if d3 > 1 else 2, dilation=d3)  # stride 8 or 16
        self.stage5 = block(4 * w, 4 * w, 1, dilation=2)
        self.low_channels, self.aux_channels, self.deep_channels = w, 4 * w, 4 * w

    def forward(self, x: torch.Tensor) -> Features:
        low = self.stem(x)
        aux = self.stage4(self.stage3(low))
        return low, aux, self.stage5(aux)


class TimmBackbone(Backbone):
    """Any timm encoder through `features_only` (`model.backbone: timm:<name>`), randomly initialised;
    weights come from `model.pretrained` (`timm:<name>` for timm's own, or a local file / URI).

    CNNs (feature levels at strides 2..32): `low` is the stride-4 level, `aux` the one before the last,
    `deep` the last, dilated to the output stride when the model supports it. ViTs (every level at the
    patch stride, e.g. DINOv2): a simple feature pyramid from the last level: resized to stride 4 (with a
    3x3 projection to a quarter of the channels), 16 and the output stride; any input size (padded).
    """

    def __init__(self, name: str, output_stride: int = 16) -> None:
        super().__init__()
        import timm  # heavy import, only for these backbones

        self.name, self.output_stride = name, output_stride
        self.vit = not timm.models.is_model(name) or "vit" in name or "dinov2" in name
        kwargs: dict = (
            {"dynamic_img_size": True, "dynamic_img_pad": True} if self.vit else {"output_stride": output_stride}
        )
        try:
            self.body = timm.create_model(name, pretrained=False, features_only=True, **kwargs)
        except RuntimeError as exc:  # unknown name, or no features_only support
            raise ValueError(
                f"model.backbone timm:{name}: timm cannot build it as a feature extractor: {exc}"
            ) from None
        channels = self.body.feature_info.channels()
        if self.vit:
            width = channels[-1]
            self.project_low = nn.Sequential(
                nn.Conv2d(width, width // 4, 3, padding=1, bias=False),
                nn.BatchNorm2d(width // 4),
                nn.ReLU(inplace=True),
            )
            self.low_channels, self.aux_channels, self.deep_channels = width // 4, width, width
        else:
            reductions = self.body.feature_info.reduction()
            self.taps = (reductions.index(4) if 4 in reductions else 0, len(channels) - 2, len(channels) - 1)
            self.low_channels, self.aux_channels, self.deep_channels = (channels[i] for i in self.taps)

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # timm's full-model keys are the feature extractor's (FeatureListNet keeps the module names;
        # the ViT getter wraps the model as `model`)
        prefix = "body.model." if self.vit else "body."
        return {f"{prefix}{k}": v for k, v in state.items()}

    def forward(self, x: torch.Tensor) -> Features:
        feats = self.body(x)
        if not self.vit:
            low, aux, deep = (feats[i] for i in self.taps)
            return low, aux, deep
        top = feats[-1]
        h, w = int(x.shape[-2]), int(x.shape[-1])

        def at(stride: int) -> torch.Tensor:
            size = (max(1, -(-h // stride)), max(1, -(-w // stride)))
            return (
                top
                if tuple(top.shape[-2:]) == size
                else F.interpolate(top, size=size, mode="bilinear", align_corners=False)
            )

        return self.project_low(at(4)), at(16), at(self.output_stride)
