"""Experiment tracking from the training workers through Ray's own integrations: `setup_mlflow` and
`setup_wandb` on rank 0 (the other ranks get no-ops). Logs the config, every report's numeric metrics at
its iteration, each validation's pseudo-label picture, and the run folder and best checkpoint as tags.
Sweeps use the matching logger callbacks (`tune_callbacks`). Tracking never fails a run: an error is
logged once and tracking stops."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def flat_params(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"data.split": "1_16", ...}, lists as text (what MLflow params hold)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
    return out


def numeric(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class Tracker:
    def __init__(self, cfg: Any, params: dict[str, Any], run_name: str, run_uri: str | None):
        self.backends: dict[str, Any] = {}  # "mlflow": the mlflow module, "wandb": the W&B run
        tracking = cfg.tracking
        if tracking.mlflow is not None:
            try:
                from ray.air.integrations.mlflow import setup_mlflow

                self.backends["mlflow"] = setup_mlflow(
                    config=flat_params(params),
                    tracking_uri=tracking.mlflow.tracking_uri,
                    experiment_name=tracking.mlflow.experiment_name,
                    run_name=run_name,
                    create_experiment_if_not_exists=True,
                    tags={"u2pl.run_dir": run_uri or "", "u2pl.method": cfg.method.name},
                )
            except Exception as exc:  # noqa: BLE001 - tracking must not stop training
                self._fail("mlflow", "start", exc)
        if tracking.wandb is not None:
            try:
                from ray.air.integrations.wandb import setup_wandb

                kwargs: dict[str, Any] = {
                    "project": tracking.wandb.project,
                    "mode": tracking.wandb.mode,
                    "name": run_name,
                    "tags": [cfg.method.name],
                    "notes": run_uri or "",
                }
                if tracking.wandb.dir:
                    Path(tracking.wandb.dir).mkdir(parents=True, exist_ok=True)
                    kwargs["dir"] = tracking.wandb.dir
                if tracking.wandb.mode == "offline" and not os.environ.get("WANDB_API_KEY"):
                    # Ray's setup_wandb insists on a key; offline, W&B never sends it anywhere
                    kwargs["api_key"] = "offline" * 5 + "00000"
                self.backends["wandb"] = setup_wandb(config=params, **kwargs)
            except Exception as exc:  # noqa: BLE001
                self._fail("wandb", "start", exc)

    @property
    def active(self) -> bool:
        return bool(self.backends)

    def _fail(self, backend: str, what: str, exc: BaseException) -> None:
        log.warning("%s tracking stopped (%s): %s: %s", backend, what, type(exc).__name__, exc)
        self.backends.pop(backend, None)

    def _each(self, what: str, fn: Any) -> None:
        for backend, handle in list(self.backends.items()):
            try:
                fn(backend, handle)
            except Exception as exc:  # noqa: BLE001
                self._fail(backend, what, exc)

    def metrics(self, values: dict[str, Any], step: int) -> None:
        data = {k: v for k, v in numeric(values).items() if k not in ("iteration", "epoch", "max_iters")}
        if data:
            self._each(
                "metrics", lambda b, h: h.log_metrics(data, step=step) if b == "mlflow" else h.log(data, step=step)
            )

    def picture(self, data: bytes, name: str, step: int) -> None:
        with tempfile.TemporaryDirectory(prefix="u2pl-track-") as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)

            def log_picture(backend: str, handle: Any) -> None:
                if backend == "mlflow":
                    handle.log_artifact(str(path), artifact_path="images")
                else:
                    import wandb

                    handle.log({"val/pseudo_labels": wandb.Image(str(path))}, step=step)

            self._each("picture", log_picture)

    def tag(self, key: str, value: str) -> None:
        def set_tag(backend: str, handle: Any) -> None:
            if backend == "mlflow":
                handle.set_tag(key, value)
            else:
                handle.summary[key] = value

        self._each("tag", set_tag)

    def close(self) -> None:
        self._each("close", lambda b, h: h.end_run() if b == "mlflow" else h.finish())
        self.backends.clear()


def tune_callbacks(cfg: Any) -> list[Any]:
    """Ray Tune's logger callbacks for the configured trackers (one tracked run per trial)."""
    callbacks: list[Any] = []
    if cfg.tracking.mlflow is not None:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(
            MLflowLoggerCallback(
                tracking_uri=cfg.tracking.mlflow.tracking_uri,
                experiment_name=cfg.tracking.mlflow.experiment_name,
                save_artifact=False,
            )
        )
    if cfg.tracking.wandb is not None:
        from ray.air.integrations.wandb import WandbLoggerCallback

        kwargs = {"mode": cfg.tracking.wandb.mode}
        if cfg.tracking.wandb.dir:
            kwargs["dir"] = cfg.tracking.wandb.dir
        callbacks.append(WandbLoggerCallback(project=cfg.tracking.wandb.project, **kwargs))
    return callbacks
