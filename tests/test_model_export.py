"""The inference graph exports (torch.export) and traces (torch.jit.trace) for the small backbones."""

import pytest
import torch

from u2pl_ray.config.schema import ModelConfig
from u2pl_ray.model import build_model


@pytest.mark.parametrize("backbone", ["tiny", "efficientnet_lite0"])
def test_torch_export_matches_eager(backbone):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=backbone, aux_head=True, decoder_channels=64, rep_dim=32), 4).eval()
    x = torch.randn(1, 3, 65, 65)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        eager = model(x)
        got = exported.module()(x)
    assert set(got) == {"pred", "rep", "aux"}
    for key in eager:
        torch.testing.assert_close(got[key], eager[key])


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
def test_jit_trace_matches_eager_on_another_input():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny", rep_head=False), 3).eval()
    traced = torch.jit.trace(model, torch.randn(1, 3, 49, 49), strict=False)
    x = torch.randn(2, 3, 49, 49)
    with torch.no_grad():
        torch.testing.assert_close(traced(x)["pred"], model(x)["pred"])
