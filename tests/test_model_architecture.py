"""The network of spec §2: shapes, strides, dilations, parameter counts, parameter groups."""

import math

import pytest
import torch
from torch import nn

from u2pl_ray.config.schema import ModelConfig
from u2pl_ray.model import build_model, convert_sync_batchnorm
from u2pl_ray.model.resnet_deep import DeepStemResNet


def _meta_model(**kw) -> nn.Module:
    # Built on the meta device: shapes and counts without allocating or computing anything.
    with torch.device("meta"):
        return build_model(ModelConfig(**kw), kw.pop("num_classes", 21)).eval()


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _stride4_deep_stem(h: int) -> int:
    """Official stem arithmetic: 3x3/s2/p1 conv, then 3x3/s2/p1 max-pool with ceil_mode."""
    h = (h + 2 - 3) // 2 + 1
    return math.ceil((h + 2 - 3) / 2) + 1


@pytest.mark.parametrize("size", [513, 512, 769])
def test_official_output_size_at_full_crop(size):
    out = _meta_model(aux_head=True)(torch.empty(2, 3, size, size, device="meta"))
    s4 = _stride4_deep_stem(size)
    assert s4 == {513: 129, 512: 129, 769: 193}[size]  # ceil-mode pool: 512 gives 129 too
    assert tuple(out["pred"].shape) == (2, 21, s4, s4)
    assert tuple(out["rep"].shape) == (2, 256, s4, s4)
    s8 = (s4 + 2 - 3) // 2 + 1
    assert tuple(out["aux"].shape) == (2, 21, s8, s8)


def test_official_parameter_counts():
    model = _meta_model(aux_head=True, num_classes=19)
    assert round(_count(model.backbone) / 1e6, 1) == 42.6
    assert round(_count(model.decoder) / 1e6, 1) == 21.8
    assert round(_count(model.aux) / 1e6, 1) == 2.4

    # Exact decoder and aux counts, written out from the layer list of spec §2 (C = 19). The spec
    # leaves the bias of the classifier's second 3x3 conv open; it has one here (256 parameters).
    c, bn = 19, 2 * 256
    aspp = 2 * (2048 * 256 + bn) + 3 * (2048 * 256 * 9 + bn)
    head = 1280 * 256 * 9 + bn
    low = 256 * 256 + 256 + bn
    trunk = (512 * 256 * 9 + 256 + bn) + (256 * 256 * 9 + 256 + bn)
    classifier = trunk + 256 * c + c
    representation = trunk + 256 * 256 + 256
    assert _count(model.decoder) == aspp + head + low + classifier + representation
    assert _count(model.aux) == 1024 * 256 * 9 + 256 + bn + 256 * c + c


def _conv2_dilations(layer: nn.Sequential) -> list[int]:
    return [block.conv2.dilation[0] for block in layer]


@pytest.mark.parametrize(
    "output_stride, multi_grid, layer3, layer4, layer3_stride",
    [
        (8, True, [1] + [2] * 22, [4, 8, 16], 1),  # official
        (16, True, [1] * 23, [2, 4, 8], 2),
        (8, False, [1] + [2] * 22, [2, 4, 4], 1),  # torchvision's dilation pattern
    ],
)
def test_deep_resnet_dilations_and_strides(output_stride, multi_grid, layer3, layer4, layer3_stride):
    with torch.device("meta"):
        net = DeepStemResNet(output_stride=output_stride, multi_grid=multi_grid)
    assert [len(layer) for layer in (net.layer1, net.layer2, net.layer3, net.layer4)] == [3, 4, 23, 3]
    assert _conv2_dilations(net.layer3) == layer3
    assert _conv2_dilations(net.layer4) == layer4
    for block, d in zip(net.layer4, layer4):
        assert block.conv2.padding == (d, d)  # keeps the spatial size
    # Stride on the 3x3 of the first block, and on its 1x1 downsample.
    assert net.layer2[0].conv2.stride == (2, 2) and net.layer2[0].conv1.stride == (1, 1)
    assert net.layer2[0].downsample[0].stride == (2, 2)
    assert net.layer3[0].conv2.stride == (layer3_stride,) * 2
    assert net.layer4[0].conv2.stride == (1, 1)


def test_deep_stem_layout_and_keys():
    with torch.device("meta"):
        net = DeepStemResNet()
    convs = [(m.in_channels, m.out_channels, m.stride[0]) for m in net.conv1 if isinstance(m, nn.Conv2d)]
    assert convs == [(3, 64, 2), (64, 64, 1), (64, 128, 1)]
    keys = {k.rsplit(".", 1)[0] for k in net.state_dict() if k.startswith(("conv1.", "bn1."))}
    assert keys == {"conv1.0", "conv1.1", "conv1.3", "conv1.4", "conv1.6", "bn1"}
    assert net.maxpool.ceil_mode and net.maxpool.kernel_size == 3
    assert net.layer1[0].conv1.in_channels == 128
    # zero_init_residual, as the official encoder (overwritten by ImageNet weights)
    with torch.device("cpu"):
        small = DeepStemResNet(layers=(1, 1, 1, 3))
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for b in small.layer4)


def test_resnet101_forward_small_input():
    torch.manual_seed(0)
    model = build_model(ModelConfig(aux_head=True), 5).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 65, 65))
    assert tuple(out["pred"].shape) == (1, 5, 17, 17)
    assert tuple(out["rep"].shape) == (1, 256, 17, 17)
    assert tuple(out["aux"].shape) == (1, 5, 9, 9)
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("backbone", ["tiny", "resnet18", "resnet50", "efficientnet_lite0"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_light_backbones_shapes(backbone, output_stride):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=backbone, output_stride=output_stride, aux_head=True, rep_dim=32)
    model = build_model(cfg, 4).train()
    out = model(torch.randn(2, 3, 65, 65))
    assert tuple(out["pred"].shape) == (2, 4, 17, 17)
    assert tuple(out["rep"].shape) == (2, 32, 17, 17)
    # aux reads the stride-16 stage, which is dilated (stride 8) at output stride 8
    side = math.ceil(65 / output_stride)
    assert tuple(out["aux"].shape) == (2, 4, side, side)
    deep = model.backbone(torch.randn(1, 3, 65, 65))[2]
    assert deep.shape[-1] == side and deep.shape[1] == model.backbone.deep_channels
    out["pred"].mean().backward()  # the graph is differentiable end to end


def test_heads_follow_the_config():
    cfg = ModelConfig(
        backbone="tiny",
        rep_head=False,
        aux_head=False,
        decoder_channels=64,
        low_level_channels=32,
        aspp_dilations=[2, 4, 6],
        dropout=0.3,
    )
    model = build_model(cfg, 3).eval()
    out = model(torch.randn(1, 3, 33, 33))
    assert set(out) == {"pred"}
    d = model.decoder
    assert [b[0].dilation[0] for b in d.aspp.atrous] == [2, 4, 6]
    assert d.aspp.out_channels == 5 * 64 and d.low_conv[0].out_channels == 32
    assert d.low_conv[0].bias is not None and d.low_conv[0].kernel_size == (1, 1)
    drops = [m.p for m in model.modules() if isinstance(m, nn.Dropout2d)]
    assert drops == [0.3] * 3  # head + two in the classifier


def test_parameter_groups_disjoint_and_complete():
    model = build_model(ModelConfig(backbone="tiny", aux_head=True), 3)
    backbone, head = model.parameter_groups()
    ids_b, ids_h = {id(p) for p in backbone}, {id(p) for p in head}
    assert not ids_b & ids_h
    assert ids_b | ids_h == {id(p) for p in model.parameters()}
    assert ids_b == {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in model.aux.parameters()} <= ids_h


def test_num_classes_and_input_errors():
    with pytest.raises(ValueError, match="num_classes=3 but the dataset has 4"):
        build_model(ModelConfig(backbone="tiny", num_classes=3), 4)
    with pytest.raises(ValueError, match="number of classes"):
        build_model(ModelConfig(backbone="tiny"))
    model = build_model(ModelConfig(backbone="tiny", num_classes=3))
    with pytest.raises(ValueError, match=r"\[B,3,H,W\].*\(3, 32, 32\)"):
        model(torch.randn(3, 32, 32))


def test_sync_batchnorm_conversion_keeps_timm_activations():
    model = build_model(ModelConfig(backbone="efficientnet_lite0", rep_dim=16, decoder_channels=32), 3).eval()
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        before = model(x)["pred"]
    converted = convert_sync_batchnorm(model).eval()
    kinds = {type(m).__name__ for m in converted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert kinds == {"SyncBatchNorm", "SyncBatchNormAct"}
    with torch.no_grad():  # eval mode uses running stats: no process group needed
        after = converted(x)["pred"]
    torch.testing.assert_close(after, before)
    # torch's own converter drops the fused ReLU6 of timm's BatchNormAct2d and changes the output.
    plain = nn.SyncBatchNorm.convert_sync_batchnorm(
        build_model(ModelConfig(backbone="efficientnet_lite0", rep_dim=16, decoder_channels=32), 3)
    )
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(plain.eval()(x)["pred"], before)
