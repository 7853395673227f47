"""benchmarks/gpu_check.py --dry-run: the GPU check's code path (train, evaluate, export, one JSON line)
on the CPU, so that the command is ready when a GPU is lent."""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)

pytestmark = [pytest.mark.ray]


@pytest.mark.timeout(420)
def test_dry_run_trains_evaluates_exports_and_prints_one_json_line(capsys):
    assert gpu_check.main(["--dry-run", "--precisions", "bf16"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["benchmark"] == "gpu_check" and last["dry_run"] and last["steps"] == 2
    run = last["bf16"]
    assert run["images_per_s"] > 0 and 0 < run["u2pl_extra_share"] < 1 and run["contrastive_s"] >= 0
    assert run["peak_gpu_memory_gib"] is None  # no GPU here
    assert last["evaluate"]["rc"] == 0 and 0 <= last["evaluate"]["miou"] <= 1 and last["export"]["rc"] == 0


def test_the_gpu_run_is_the_voc_shape():
    args = gpu_check.overrides(20, "bf16", False, "/tmp/cache")
    assert "data.synthetic.image_size=513" in args and "scaling.use_gpu=true" in args and "scaling.amp=bf16" in args
    from u2pl_ray.config import load_config

    cfg = load_config(gpu_check.CONFIG, args)
    assert (cfg.model.backbone, cfg.data.crop_size, cfg.data.batch_size) == ("resnet101_deep", 513, 4)
    assert cfg.model.pretrained is None and cfg.model.sync_bn and cfg.method.name == "u2pl"
