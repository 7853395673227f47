"""A real Ray Tune sweep of tiny U2PL trials: ASHA stops weak trials, the outputs are usable."""

from __future__ import annotations

import csv

import pytest
from train_support import local_ray

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for both sweeps (a Ray start costs about 6 s of CPU on 2 cores)."""
    with local_ray():
        yield


@pytest.mark.timeout(480)
def test_sweep_stops_weak_trials_and_writes_a_runnable_best_config(ray_session, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from u2pl_ray.train import main as train_main
    from u2pl_ray.tune import main as tune_main

    common = [f"--set=storage.path={tmp_path}", f"--set=data.cache_dir={tmp_path / 'cache'}"]
    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's local folder store
    assert (
        tune_main(
            [
                *common,
                "--set=tune.name=sweep",
                f"--set=tracking.mlflow.tracking_uri={store}",
                "--set=tracking.mlflow.experiment_name=sweep",
            ]
        )
        == 0
    )
    # Tune's MLflow callback: one run per trial, its parameters and its reported mIoU
    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    assert len(runs) == 4 and all("val/miou" in r.data.metrics for r in runs)
    lrs = {value for r in runs for key, value in r.data.params.items() if key.endswith("lr")}
    assert len(lrs) == 4, "each trial's sampled learning rate"
    sweep = tmp_path / "sweep"
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert len(rows) == 4
    reports = sorted(int(r["reports"]) for r in rows)
    assert reports[0] < reports[-1] == 4, f"ASHA stopped no trial early: {reports}"
    best = max(rows, key=lambda r: float(r["best_val_miou"]))
    assert float(best["optim.lr"]) >= 0.01, "the learning trials beat the frozen ones"
    assert (sweep / "miou_vs_params.png").stat().st_size > 1000
    best_config = sweep / "best_config.yaml"
    assert f"lr: {best['optim.lr']}" in best_config.read_text()
    rc = train_main(["--config", str(best_config), "--set=schedule.epochs=1", "--set=storage.name=from-best", *common])
    assert rc == 0
    assert (tmp_path / "from-best" / "summary.json").exists()


def test_search_space_errors_name_the_key():
    from u2pl_ray.config import ConfigError, config_to_dict, load_config
    from u2pl_ray.sweep.space import build_search_space

    base = config_to_dict(load_config())
    for space, fragment in [
        ({"method.drop_percnt": {"choice": [1]}}, "method.drop_percnt"),
        ({"method.drop_percent": {"uniform": [50, 150]}}, "150"),
        ({"optim.lr": {"loguniform": [0, 1]}}, "must be > 0"),
        ({"optim.lr": {"normal": [0, 1]}}, "unknown kind 'normal'"),
        ({"optim.lr": [0.1]}, "expected one of"),
        ({}, "empty"),
    ]:
        with pytest.raises(ConfigError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
            build_search_space(base, space)


@pytest.mark.timeout(420)
def test_optuna_search_runs_a_tiny_sweep_with_asha(ray_session, tmp_path):
    from u2pl_ray.tune import main as tune_main

    args = [
        f"--set=storage.path={tmp_path}",
        f"--set=data.cache_dir={tmp_path / 'cache'}",
        "--set=tune.name=bayes",
        "--set=tune.search=optuna",
        "--set=tune.num_samples=2",
        "--set=schedule.epochs=2",
        "--set=tune.search_space={method.drop_percent: {uniform: [60, 95]}, "
        "method.unsup_weight: {loguniform: [0.3, 3.0]}}",
    ]
    assert tune_main(args) == 0
    rows = list(csv.DictReader((tmp_path / "bayes" / "results.csv").open()))
    assert len(rows) == 2 and all(r["best_val_miou"] for r in rows)
    drops = [float(r["method.drop_percent"]) for r in rows]
    assert len(set(drops)) == 2 and all(60 <= d <= 95 for d in drops)  # sampled by Optuna in the range


def test_optuna_refuses_a_grid_by_name():
    from pathlib import Path

    from u2pl_ray.config import ConfigError, load_config
    from u2pl_ray.tune import _search_alg

    demo = Path(__file__).resolve().parent.parent / "configs" / "tune_demo.yaml"
    cfg = load_config(demo, ["tune.search=optuna"])
    with pytest.raises(ConfigError, match="tune.search_space.optim.lr cannot be a grid"):
        _search_alg(cfg)
