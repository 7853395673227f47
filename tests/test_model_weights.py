"""Backbone weights: the authors' deep-stem ResNet-101 layout, torchvision layout, reports, errors."""

import logging

import fsspec
import pytest
import torch
import torchvision

from u2pl_ray.config.schema import ModelConfig
from u2pl_ray.model import build_model, load_backbone_weights, read_state_dict
from u2pl_ray.model.resnet_deep import resnet101_deep


@pytest.fixture(scope="module")
def authors_layout_state() -> dict[str, torch.Tensor]:
    """A state dict in the layout of the authors' ImageNet file: a fresh deep-stem ResNet-101 with
    distinctive values, plus the ImageNet classifier the file carries."""
    g = torch.Generator().manual_seed(3)
    state = {
        k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v
        for k, v in resnet101_deep().state_dict().items()
    }
    state["fc.weight"] = torch.randn(1000, 2048, generator=g)
    state["fc.bias"] = torch.randn(1000, generator=g)
    return state


@pytest.fixture(scope="module")
def model():
    return build_model(ModelConfig(), 21)


def _assert_backbone_equals(model, state):
    own = model.backbone.state_dict()
    for k, v in own.items():
        torch.testing.assert_close(v, state[k], msg=k)


def test_authors_file_loads_completely(tmp_path, model, authors_layout_state):
    path = tmp_path / "resnet101.pth"
    torch.save(authors_layout_state, path)
    report = load_backbone_weights(model, str(path))
    assert report.missing == []
    assert report.unexpected == ["fc.weight", "fc.bias"]
    assert len(report.loaded) == len(model.backbone.state_dict())
    assert report.source == str(path)
    _assert_backbone_equals(model, authors_layout_state)
    assert model.backbone.conv1[6].weight.shape == (128, 64, 3, 3)


def test_wrapped_and_module_prefixed_checkpoint(tmp_path, model, authors_layout_state):
    shifted = {f"module.{k}": v + 1 if v.is_floating_point() else v for k, v in authors_layout_state.items()}
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": shifted}, path)
    report = load_backbone_weights(model.backbone, str(path))  # a backbone works as well as the model
    assert report.missing == [] and sorted(report.unexpected) == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(model.backbone.layer4[2].conv3.weight, authors_layout_state["layer4.2.conv3.weight"] + 1)
    torch.save({"model": authors_layout_state}, path)
    assert load_backbone_weights(model, str(path)).missing == []
    _assert_backbone_equals(model, authors_layout_state)


def test_partial_file_reports_missing_and_keeps_the_rest(tmp_path, authors_layout_state):
    model = build_model(ModelConfig(), 21)
    before = model.backbone.layer4[2].conv2.weight.detach().clone()
    partial = {k: v for k, v in authors_layout_state.items() if not k.startswith("layer4.2.")}
    partial.pop("bn1.num_batches_tracked")  # older files lack BN counters: not reported
    partial["extra.thing"] = torch.zeros(3)
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    report = load_backbone_weights(model, str(path))
    expected_missing = [
        k for k in model.backbone.state_dict() if k.startswith("layer4.2.") and not k.endswith("num_batches_tracked")
    ]
    assert report.missing == expected_missing and len(expected_missing) == 15
    assert set(report.unexpected) == {"fc.weight", "fc.bias", "extra.thing"}
    torch.testing.assert_close(model.backbone.layer4[2].conv2.weight, before)  # untouched
    torch.testing.assert_close(model.backbone.layer4[1].conv2.weight, authors_layout_state["layer4.1.conv2.weight"])


def test_foreign_and_corrupted_files_are_errors_naming_the_file(tmp_path, model, authors_layout_state):
    foreign = tmp_path / "foreign.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), foreign)
    with pytest.raises(ValueError, match=r"foreign\.pth.*do not fit"):
        load_backbone_weights(model, str(foreign))

    # torchvision's 7x7-stem ResNet-101 shares most keys but not the stem's shapes: refused.
    tv101 = tmp_path / "tv101.pth"
    torch.save(torchvision.models.resnet101(weights=None).state_dict(), tv101)
    with pytest.raises(ValueError, match=r"tv101\.pth.*shape mismatch.*bn1\.weight \(file \(64,\), model \(128,\)\)"):
        load_backbone_weights(model, str(tv101))

    good = tmp_path / "good.pth"
    torch.save(authors_layout_state, good)
    corrupted = tmp_path / "corrupted.pth"
    corrupted.write_bytes(good.read_bytes()[: 1 << 20])  # truncated download
    with pytest.raises(ValueError, match=r"cannot read backbone weights .*corrupted\.pth"):
        load_backbone_weights(model, str(corrupted))

    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(ValueError, match=r"list\.pth: expected a state dict"):
        load_backbone_weights(model, str(not_a_dict))

    with pytest.raises(FileNotFoundError, match=r"absent\.pth"):
        load_backbone_weights(model, str(tmp_path / "absent.pth"))


def test_weights_only_refuses_pickled_code(tmp_path, model):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.0.weight": torch.zeros(1), "hook": logging.getLogger}, path)
    with pytest.raises(ValueError, match=r"evil\.pth"):
        read_state_dict(str(path))


def test_fsspec_uris(tmp_path, authors_layout_state):
    model = build_model(ModelConfig(backbone="resnet18"), 3)
    state = torchvision.models.resnet18(weights=None).state_dict()
    fs = fsspec.filesystem("memory")
    with fs.open("/weights/r18.pth", "wb") as f:
        torch.save(state, f)
    report = load_backbone_weights(model, "memory://weights/r18.pth")
    assert report.missing == [] and report.unexpected == ["fc.weight", "fc.bias"]
    torch.testing.assert_close(model.backbone.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])
    with pytest.raises(FileNotFoundError, match="memory://weights/none.pth"):
        load_backbone_weights(model, "memory://weights/none.pth")
    local = tmp_path / "r18.pth"
    torch.save(state, local)
    assert load_backbone_weights(model, f"file://{local}").missing == []


@pytest.mark.parametrize("backbone, depth", [("resnet18", 18), ("resnet50", 50)])
def test_build_model_loads_torchvision_layout_and_logs(tmp_path, caplog, backbone, depth):
    tv = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    torch.nn.init.normal_(tv.conv1.weight, generator=torch.Generator().manual_seed(0))
    path = tmp_path / f"r{depth}.pth"
    torch.save(tv.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="u2pl_ray.model.build"):
        model = build_model(ModelConfig(backbone=backbone, pretrained=str(path), output_stride=8), 4)
    torch.testing.assert_close(model.backbone.conv1.weight, tv.conv1.weight)
    assert model.weights_report.unexpected == ["fc.weight", "fc.bias"]
    assert f"loaded {len(model.weights_report.loaded)} tensors from {path}" in caplog.text
    assert "unexpected: fc.weight, fc.bias" in caplog.text


@pytest.mark.s3
def test_s3_uri_with_credentials_from_the_environment(s3_env):
    """Weights read through fsspec/s3fs with the endpoint and credentials from the environment only."""
    s3_env.make_bucket("weights")
    state = torchvision.models.resnet18(weights=None).state_dict()
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    with fs.open("weights/r18.pth", "wb") as f:
        torch.save(state, f)
    model = build_model(ModelConfig(backbone="resnet18"), 3)
    report = load_backbone_weights(model, "s3://weights/r18.pth")
    assert report.missing == [] and report.unexpected == ["fc.weight", "fc.bias"]
    torch.testing.assert_close(model.backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    with pytest.raises(FileNotFoundError, match="s3://weights/absent.pth"):
        load_backbone_weights(model, "s3://weights/absent.pth")
