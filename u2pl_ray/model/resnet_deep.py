"""The official U2PL encoder: ResNet-101 with a deep stem (spec §2).

State-dict keys follow the authors' ImageNet file (`conv1.0/.1/.3/.4/.6`, `bn1`, `layer1..4`), so
that file loads as is. The bottleneck is torchvision's (stride on the 3x3, 1x1-conv downsample);
only the stem, the dilation pattern and the multi-grid differ from torchvision's ResNet.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from u2pl_ray.model.base import Backbone, Features, dilations_for

# Multi-grid unit rates of the last stage (DeepLabv3): layer4 dilations = rate x (1, 2, 4).
MULTI_GRID = (1, 2, 4)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class DeepStemResNet(Backbone):
    """Bottleneck ResNet with the 3x(3x3) stem of widths 64-64-128 and dilated last stages.

    Output stride 8 dilates layer3 (rate 2) and layer4 (rate 4); 16 dilates layer4 only (rate 2).
    With `multi_grid` the blocks of layer4 use rate x (1, 2, 4): (4, 8, 16) at stride 8, as the
    official model. Without it, torchvision's pattern: the first block of a dilated stage keeps the
    previous stage's rate.
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (3, 4, 23, 3),
        output_stride: int = 8,
        multi_grid: bool = True,
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        self.output_stride = output_stride
        d3, d4 = dilations_for(output_stride)
        self.conv1 = nn.Sequential(
            _conv3x3(3, 64, stride=2),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            _conv3x3(64, 64),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            _conv3x3(64, 128),
        )
        self.bn1 = nn.BatchNorm2d(128)
        self.relu = nn.ReLU(inplace=True)
        # ceil_mode: 513 -> 257 -> 129, the official stride-4 size.
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        self._inplanes = 128
        self.layer1 = self._make_layer(64, layers[0], stride=1, dilation=1, first_dilation=1)
        self.layer2 = self._make_layer(128, layers[1], stride=2, dilation=1, first_dilation=1)
        self.layer3 = self._make_layer(256, layers[2], stride=2 if d3 == 1 else 1, dilation=d3, first_dilation=1)
        if multi_grid:
            rates = [d4 * g for g in MULTI_GRID]
            if layers[3] != len(rates):
                raise ValueError(f"multi-grid needs {len(rates)} blocks in layer4, the layout has {layers[3]}")
            self.layer4 = self._make_layer(512, layers[3], stride=1 if d4 > 1 else 2, rates=rates)
        else:
            self.layer4 = self._make_layer(512, layers[3], stride=2 if d4 == 1 else 1, dilation=d4, first_dilation=d3)
        self.low_channels, self.aux_channels, self.deep_channels = 256, 1024, 2048
        self._init_weights(zero_init_residual)

    def _make_layer(
        self,
        planes: int,
        blocks: int,
        stride: int,
        dilation: int = 1,
        first_dilation: int = 1,
        rates: list[int] | None = None,
    ) -> nn.Sequential:
        if rates is None:
            rates = [first_dilation] + [dilation] * (blocks - 1)
        downsample = None
        out = planes * Bottleneck.expansion
        if stride != 1 or self._inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )
        layers = [Bottleneck(self._inplanes, planes, stride, downsample, dilation=rates[0])]
        self._inplanes = out
        layers += [Bottleneck(out, planes, dilation=r) for r in rates[1:]]
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # As the official encoder; the ImageNet file overwrites all of it.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)

    def forward(self, x: torch.Tensor) -> Features:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        aux = self.layer3(self.layer2(low))
        return low, aux, self.layer4(aux)


def resnet101_deep(output_stride: int = 8, multi_grid: bool = True) -> DeepStemResNet:
    return DeepStemResNet((3, 4, 23, 3), output_stride=output_stride, multi_grid=multi_grid)
