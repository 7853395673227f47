"""Weights users can get: torchvision's weights API and timm encoders (CNNs and ViTs), each tested with
local files in their own layout and without network (torchvision's cache laid out by hand, timm models
randomly initialised)."""

import os

import pytest
import torch
import torchvision

from u2pl_ray.config import ConfigError, load_config
from u2pl_ray.config.schema import ModelConfig
from u2pl_ray.model import build_model, load_backbone_weights

SMALL = dict(decoder_channels=16, low_level_channels=8, rep_dim=8)


def test_torchvision_weights_come_through_torchvisions_own_api_and_cache(tmp_path, monkeypatch):
    from torchvision.models import ResNet50_Weights

    # what torchvision would have downloaded, in its cache: the layout of torchvision.models.resnet50
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None).state_dict()
    torch.save(reference, cache / os.path.basename(ResNet50_Weights.IMAGENET1K_V2.url))
    model = build_model(
        ModelConfig(backbone="resnet50", pretrained="torchvision:ResNet50_Weights.IMAGENET1K_V2", **SMALL), 3
    )
    assert model.weights_report.missing == [] and len(model.weights_report.loaded) > 300
    assert torch.equal(model.backbone.layer4[2].conv3.weight, reference["layer4.2.conv3.weight"])


def test_a_saved_torchvision_resnet101_loads_into_the_standard_stem_backbone(tmp_path):
    path = tmp_path / "r101.pth"
    torch.save(torchvision.models.resnet101(weights=None).state_dict(), path)
    model = build_model(ModelConfig(backbone="resnet101", **SMALL), 3)
    report = load_backbone_weights(model, str(path))
    assert report.missing == [] and sorted(report.unexpected) == ["fc.bias", "fc.weight"]


def test_missing_weights_name_the_options(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="model.pretrained takes .*torchvision:<WEIGHTS_ENUM>.*timm:<name>"):
        build_model(ModelConfig(backbone="resnet50", pretrained=str(tmp_path / "nothing.pth"), **SMALL), 3)
    with pytest.raises(ValueError, match="unknown torchvision weights 'ResNet50_Weights.NOPE'"):
        build_model(ModelConfig(backbone="resnet50", pretrained="torchvision:ResNet50_Weights.NOPE", **SMALL), 3)


@pytest.mark.parametrize(
    "name, output_stride",
    [("resnet18", 8), ("resnet18", 16), ("vit_tiny_patch16_224", 8), ("vit_small_patch14_dinov2", 16)],
)
def test_timm_encoders_feed_the_decoder(name, output_stride):
    model = build_model(ModelConfig(backbone=f"timm:{name}", output_stride=output_stride, **SMALL), 4)
    out = model(torch.randn(2, 3, 50, 50))  # any input size, also for the patch-14 DINOv2
    assert out["pred"].shape == (2, 4, 13, 13) and out["rep"].shape == (2, 8, 13, 13)
    out["pred"].sum().backward()
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny_patch16_224"])
def test_timm_weights_from_a_local_file_in_timms_layout(tmp_path, name):
    import timm

    torch.manual_seed(1)
    full = timm.create_model(name, pretrained=False)
    path = tmp_path / "w.pth"
    torch.save(full.state_dict(), path)
    model = build_model(ModelConfig(backbone=f"timm:{name}", pretrained=str(path), **SMALL), 3)
    # every encoder tensor loaded; a ViT's pyramid projection is new (random)
    assert all(k.startswith("project_low.") for k in model.weights_report.missing)
    first = next(k for k in full.state_dict() if k.endswith("weight"))
    loaded = dict(model.backbone.named_parameters())
    key = next(k for k in loaded if k.endswith(first))
    assert torch.equal(loaded[key], full.state_dict()[first])


def test_timm_weights_that_timm_cannot_provide_are_a_clear_error():
    with pytest.raises(
        FileNotFoundError, match="timm:no_such_model: timm could not provide its weights.*offline, save"
    ):
        build_model(ModelConfig(backbone="timm:resnet18", pretrained="timm:no_such_model", **SMALL), 3)
    with pytest.raises(ValueError, match="timm:no_such_model: timm cannot build it as a feature extractor"):
        build_model(ModelConfig(backbone="timm:no_such_model", **SMALL), 3)


def test_backbone_names_are_checked():
    assert load_config(None, ["model.backbone=timm:convnext_atto"]).model.backbone == "timm:convnext_atto"
    with pytest.raises(ConfigError, match="model.backbone must be one of resnet101_deep, resnet101"):
        load_config(None, ["model.backbone=resnet34"])
