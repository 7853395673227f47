"""EfficientNet-Lite0: the bundled ImageNet weights mapped onto timm's keys, proven by classifying
scikit-image's photos, and loaded into the segmentation backbone."""

import pytest
import skimage.data
import timm
import torch
import torch.nn.functional as F

from u2pl_ray.config.schema import ModelConfig
from u2pl_ray.model import build_model, read_state_dict
from u2pl_ray.model.efficientnet_keys import is_lukemelas_layout, lukemelas_to_timm

# The weights are a port of the TF EfficientNet-Lite checkpoints, which expect (pixel - 127) / 128.
LITE_MEAN, LITE_STD = 127.0, 128.0


def _imagenet_input(image, size: int = 224) -> torch.Tensor:
    """Resize the shorter side to size/0.875, centre-crop size x size, normalise (RGB uint8 in)."""
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None]
    h, w = x.shape[-2:]
    scale = size / 0.875 / min(h, w)
    x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return (x[..., top : top + size, left : left + size] - LITE_MEAN) / LITE_STD


@pytest.fixture(scope="module")
def package_state():
    state = read_state_dict("package:efficientnet_lite0")
    assert is_lukemelas_layout(state)
    return state


@pytest.fixture(scope="module")
def classifier(package_state):
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    mapped = lukemelas_to_timm(package_state, net.blocks)
    net.load_state_dict(mapped, strict=True)  # every key mapped, every shape right, nothing left over
    return net.eval()


@pytest.mark.parametrize(
    "name, classes",
    [
        ("chelsea", range(281, 286)),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
        ("coffee", (967, 968)),  # espresso, cup
    ],
)
def test_mapped_weights_classify_photos(classifier, name, classes):
    with torch.no_grad():
        probs = classifier(_imagenet_input(getattr(skimage.data, name)())).softmax(-1)[0]
    top = int(probs.argmax())
    assert top in classes, f"{name}: top-1 class {top} ({float(probs[top]):.2f})"
    assert float(probs[list(classes)].sum()) > 0.5


def test_mapping_changes_the_prediction_when_wrong(package_state):
    """Control: the same weights with two blocks' depthwise kernels swapped no longer see a cat."""
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = dict(package_state)
    a, b = "_blocks.9._depthwise_conv.weight", "_blocks.10._depthwise_conv.weight"
    state[a], state[b] = state[b], state[a]
    net.load_state_dict(lukemelas_to_timm(state, net.blocks), strict=True)
    with torch.no_grad():
        probs = net.eval()(_imagenet_input(skimage.data.chelsea())).softmax(-1)[0]
    assert float(probs[281:286].sum()) < 0.5


def test_segmentation_backbone_loads_package_weights(package_state):
    model = build_model(ModelConfig(backbone="efficientnet_lite0", pretrained="package:efficientnet_lite0"), 3)
    report = model.weights_report
    assert report.missing == []
    # The classification head stays behind, nothing else (keys as the backbone names them).
    assert set(report.unexpected) == {
        f"body.{k}"
        for k in (
            "conv_head.weight",
            "classifier.weight",
            "classifier.bias",
            "bn2.weight",
            "bn2.bias",
            "bn2.running_mean",
            "bn2.running_var",
            "bn2.num_batches_tracked",
        )
    }
    body = model.backbone.body
    torch.testing.assert_close(body.blocks[1][0].conv_pw.weight, package_state["_blocks.1._expand_conv.weight"])
    torch.testing.assert_close(body.blocks[0][0].conv_pw.weight, package_state["_blocks.0._project_conv.weight"])
    torch.testing.assert_close(body.blocks[6][0].bn3.running_var, package_state["_blocks.15._bn2.running_var"])
    torch.testing.assert_close(body.bn1.weight, package_state["_bn0.weight"])


def test_mapping_rejects_a_layout_that_does_not_match(package_state):
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    shifted = {
        k.replace("_blocks.1.", "_blocks.0.", 1) if k.startswith("_blocks.1.") else k: v
        for k, v in package_state.items()
        if not k.startswith("_blocks.0.")
    }
    with pytest.raises(ValueError, match=r"_blocks\.0\..*block 0 is expanded in the file but is not in the model"):
        lukemelas_to_timm(shifted, net.blocks)
