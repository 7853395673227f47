"""benchmarks/bench_quality.py: its configs, its arithmetic and report, and one tiny real run through Ray."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from u2pl_ray.config import load_config

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_quality", REPO / "benchmarks" / "bench_quality.py")
bq = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bq)

# A few seconds of training: the tiny backbone on 32 px images, 2 x 2 iterations.
TINY = [
    "model.backbone=tiny",
    "method.sup_only_epochs=1",
    "model.pretrained=null",
    "model.output_stride=8",
    "model.aspp_dilations=[1,2,3]",
    "model.decoder_channels=16",
    "model.low_level_channels=8",
    "model.rep_dim=16",
    "data.batch_size=2",
    "data.crop_size=32",
    "data.synthetic.num_train=48",
    "data.synthetic.num_val=8",
    "data.synthetic.image_size=32",
    "data.synthetic.shard_rows=16",
    "method.num_queries=8",
    "method.num_negatives=4",
    "method.bank_size_class0=100",
    "method.bank_size=50",
    "schedule.epochs=2",
    "schedule.iters_per_epoch=2",
    "eval.every_epochs=2",
    "report_every_iters=2",
]


@pytest.mark.parametrize("suite", sorted(bq.SUITES))
@pytest.mark.parametrize("setting", bq.SETTINGS)
def test_settings_differ_only_in_labels_and_method(suite, setting):
    configs = bq.SUITES[suite]
    base = load_config(configs / "base.yaml")
    cfg = load_config(configs / f"{setting}.yaml")
    assert cfg.data.synthetic == base.data.synthetic and cfg.data.root == base.data.root  # same images
    assert cfg.schedule == base.schedule and cfg.optim == base.optim and cfg.seed == base.seed
    assert cfg.model == base.model and cfg.data.crop_size == base.data.crop_size
    assert cfg.method.name == setting.split("_")[0].replace("sup", "supervised")
    assert cfg.data.split == ("full" if setting == "sup_full" else "1_16")
    if setting.startswith("u2pl"):
        variant = setting.split("_")[1]
        assert cfg.method.variant == ("official" if variant == "nocontra" else variant)
        assert cfg.method.contrastive == (variant != "nocontra")
        # the U2PL rows differ from each other in the method only
        official = load_config(configs / "u2pl_official_1_16.yaml")
        assert cfg.method.sup_only_epochs == official.method.sup_only_epochs


def fake_results(means: dict[str, list[float]]) -> dict:
    return {k: bq.aggregate([{"seed": i, "miou": v} for i, v in enumerate(vals)]) for k, vals in means.items()}


def test_targets_gain_and_gap_closed():
    res = fake_results({"sup_1_16": [0.30, 0.32], "u2pl_official_1_16": [0.37, 0.39], "sup_full": [0.45, 0.47]})
    t = bq.targets(res)["u2pl_official_1_16"]
    assert t["gain"] == pytest.approx(0.07) and t["gap_closed"] == pytest.approx(0.07 / 0.15)
    assert t["gain_ok"] and t["gap_ok"]
    res = fake_results({"sup_1_16": [0.30], "u2pl_paper_1_16": [0.33], "sup_full": [0.60]})
    t = bq.targets(res)["u2pl_paper_1_16"]
    assert not t["gain_ok"] and not t["gap_ok"]


def test_main_writes_json_markdown_and_one_json_line(tmp_path, monkeypatch, capsys):
    import ray

    fake = {"sup_1_16": 0.30, "u2pl_official_1_16": 0.37, "sup_full": 0.45}
    monkeypatch.setattr(ray, "init", lambda *a, **k: None)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(
        bq,
        "run_one",
        lambda configs, setting, seed, overrides, storage: {
            "seed": seed,
            "miou": fake[setting] + 0.01 * seed,
            "student_last": None,
            "iterations": 160,
            "curve": [[80, fake[setting] - 0.1, None, None], [160, fake[setting] + 0.01 * seed, None, None]],
        },
    )
    monkeypatch.setattr("sys.argv", ["bench_quality.py", "--quick", "--seeds", "0", "1", "--out", str(tmp_path)])
    bq.main()
    lines = capsys.readouterr().out.strip().splitlines()
    last = json.loads(lines[-1])
    assert last["means"]["u2pl_official_1_16"] == pytest.approx(0.375)
    assert last["gain_ok"] == {"u2pl_official_1_16": True} and last["quick"] and last["suite"] == "synthetic"
    assert any("one seed is not the result" in line for line in lines)
    report = json.loads((tmp_path / "quality_quick.json").read_text())["synthetic"]
    assert report["results"]["sup_full"]["miou"] == pytest.approx([0.45, 0.46])
    assert "load_avg_start" in report and report["overrides"] == bq.quick_overrides("synthetic")
    md = (tmp_path / "quality_quick.md").read_text()
    assert "| u2pl_official_1_16 | 37.0 | 38.0 | 37.5 ± 0.7 | +7.0 | 47 % | yes | – |" in md
    assert "one seed is not the result" in md
    assert (tmp_path / "quality_quick_curves_synthetic.png").stat().st_size > 1000
    # results saved per (setting, seed): a second invocation trains nothing
    monkeypatch.setattr(bq, "run_one", lambda *a: pytest.fail("a saved result was trained again"))
    bq.main()


@pytest.mark.ray
@pytest.mark.slow
def test_one_real_run_reads_its_summary(tmp_path):
    import ray

    ray.init(address="local", num_cpus=2, object_store_memory=1 << 30, log_to_driver=False)
    try:
        out = bq.run_one(
            bq.CONFIGS, "u2pl_official_1_16", 3, [*TINY, f"data.cache_dir={tmp_path / 'cache'}"], str(tmp_path / "runs")
        )
    finally:
        ray.shutdown()
    assert out["seed"] == 3 and out["iterations"] == 4
    assert 0 <= out["miou"] <= 1 and out["miou"] == out["teacher_last"]
    assert [point[0] for point in out["curve"]] == [4] and out["curve"][-1][1] == out["miou"]


def test_each_setting_and_seed_is_saved_and_reused_until_its_key_changes(tmp_path):
    calls = []

    def run():
        calls.append(1)
        return {"seed": 0, "miou": 0.4 + 0.1 * len(calls)}

    first = bq.cached_run(tmp_path, "sup_1_16", 0, "key-a", run)
    again = bq.cached_run(tmp_path, "sup_1_16", 0, "key-a", run)
    assert first == again == {"seed": 0, "miou": 0.5} and len(calls) == 1
    assert (tmp_path / "sup_1_16-s0.json").is_file()
    other = bq.cached_run(tmp_path, "sup_1_16", 0, "key-b", run)  # other configs or data: trained again
    assert other["miou"] == pytest.approx(0.6) and len(calls) == 2
    key = lambda *a: bq.run_key(bq.CONFIGS, *a)  # noqa: E731
    assert key("sup_1_16", 0, [], "synthetic:procedural") != key("sup_1_16", 1, [], "synthetic:procedural")
    assert key("sup_1_16", 0, [], "synthetic:procedural") != key(
        "sup_1_16", 0, ["schedule.epochs=2"], "synthetic:procedural"
    )
    # the same setting on other data (Fashion-MNIST installed since) is not the same result
    assert key("sup_1_16", 0, [], "synthetic:procedural") != key("sup_1_16", 0, [], "synthetic:fashion_mnist")
    assert bq.data_identity(bq.CONFIGS, "sup_1_16", []).startswith("synthetic:")


def test_plateau_is_the_step_between_the_last_two_validations():
    assert bq.plateau(
        {"curve": [[100, 0.40, None, None], [200, 0.52, None, None], [300, 0.515, None, None]]}
    ) == pytest.approx(0.005)
    assert bq.plateau({"curve": [[100, 0.40, None, None]]}) is None


def test_saved_only_reports_what_is_saved_and_trains_nothing(tmp_path, monkeypatch, capsys):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("--saved-only started Ray"))
    folder = tmp_path / "quality_runs" / "synthetic"
    folder.mkdir(parents=True)
    for setting, seed, miou in (("sup_1_16", 0, 0.40), ("sup_1_16", 1, 0.42), ("sup_full", 0, 0.57)):
        key = bq.run_key(bq.CONFIGS, setting, seed, [], bq.data_identity(bq.CONFIGS, setting, []))
        result = {"seed": seed, "miou": miou, "iterations": 1200, "curve": [[1200, miou, miou, None]]}
        (folder / f"{setting}-s{seed}.json").write_text(json.dumps({"key": key, "result": result}))
    monkeypatch.setattr("sys.argv", ["bench_quality.py", "--saved-only", "--out", str(tmp_path)])
    bq.main()
    report = json.loads((tmp_path / "quality.json").read_text())["synthetic"]
    assert set(report["results"]) == {"sup_1_16", "sup_full"}
    assert report["results"]["sup_1_16"]["miou"] == [0.40, 0.42]
    assert "| sup_1_16 | 40.0 | 42.0 | – | 41.0 ± 1.4 |" in (tmp_path / "quality.md").read_text()
