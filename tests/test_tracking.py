"""Experiment tracking through Ray's integrations, for real: a two-worker run logging to a local MLflow
store (read back with MLflow's client) and to Weights & Biases in offline mode."""

from pathlib import Path

import pytest
from train_support import local_ray, train

from u2pl_ray.engine.tracking import flat_params

pytestmark = [pytest.mark.ray]


def test_flat_params_are_what_mlflow_stores():
    assert flat_params({"data": {"split": "1_16", "mean": [1, 2]}, "seed": 2, "x": None}) == {
        "data.split": "1_16",
        "data.mean": "[1, 2]",
        "seed": 2,
        "x": None,
    }


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_run_logs_config_metrics_pictures_and_checkpoints_to_mlflow_and_wandb(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "mlruns").as_uri()
    # MLflow 3 keeps a local folder store behind this switch (a database store needs SQLAlchemy)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    with local_ray({"WANDB_SILENT": "true", "MLFLOW_ALLOW_FILE_STORE": "true"}):
        rc = train(
            f"--set=storage.path={tmp_path / 'runs'}",
            "--set=storage.name=tracked",
            f"--set=data.cache_dir={tmp_path / 'cache'}",
            "--set=eval.images_every=1",
            f"--set=tracking.mlflow.tracking_uri={store}",
            "--set=tracking.mlflow.experiment_name=tiny",
            "--set=tracking.wandb.mode=offline",
            f"--set=tracking.wandb.dir={tmp_path / 'wandb'}",
        )
    assert rc == 0
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["data.split"] == "1_4" and run.data.params["method.name"] == "u2pl"
    assert run.info.run_name == "tracked" and run.data.tags["u2pl.run_dir"].endswith("tracked")
    history = client.get_metric_history(run.info.run_id, "val/miou")
    assert [m.step for m in history] == [4, 8] and all(0 <= m.value <= 1 for m in history)
    assert len(client.get_metric_history(run.info.run_id, "total")) >= 4  # the progress reports too
    best = run.data.tags["u2pl.best_checkpoint"]
    assert Path(best).name.startswith("checkpoint_0000000") and (Path(best) / "meta.json").is_file()
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert images == ["images/val_00000004.png", "images/val_00000008.png"]
    # W&B offline: one run folder; its record file holds the metrics and the best checkpoint's location
    (record,) = list((tmp_path / "wandb" / "wandb").glob("offline-run-*/run-*.wandb"))
    data = record.read_bytes()
    assert b"val/miou" in data and b"bank_fill/0" in data and best.encode() in data
