"""`python -m u2pl_ray.tune --config FILE [--set key=value ...] [--resume SWEEP]`

A Ray Tune sweep over config keys (the `tune` section: search space, trials, concurrency, ASHA).
Each trial is a full distributed training run with its own Ray Train workers. At the end it writes
`results.csv`, `best_config.yaml` (ready for `python -m u2pl_ray.train --config`) and
`miou_vs_params.png` into the sweep folder under storage.path.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from u2pl_ray.config import Config, ConfigError, config_to_dict, dump_config, load_config, load_yaml
from u2pl_ray.engine.launch import Storage, build_trainer, epoch_iterations, init_ray, resolve_storage, train_datasets
from u2pl_ray.engine.tracking import tune_callbacks

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tune_demo.yaml"
SWEEP_CONFIG = "sweep_config.yaml"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m u2pl_ray.tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", help="YAML config with a `tune:` section (default: configs/tune_demo.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--resume", metavar="SWEEP", help="continue an interrupted sweep: its name or folder/URI")
    p.add_argument("--address", help="Ray address (default: as `train`)")
    return p


def run_trial(params: dict[str, Any], *, base: dict[str, Any], dataset_info: Any, trials_uri: str) -> None:
    """One Tune trial: a TorchTrainer run whose reports reach Tune through TuneReportCallback."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from u2pl_ray.config import build_config
    from u2pl_ray.sweep.space import apply_params

    cfg = build_config(apply_params(base, params), source=f"trial {params}")
    world = max(1, cfg.scaling.num_workers)
    iters = epoch_iterations(cfg, dataset_info, world)
    trainer = build_trainer(
        cfg,
        name=ray.tune.get_context().get_trial_id(),
        storage=resolve_storage(trials_uri),
        dataset_info=dataset_info,
        iters_per_epoch=iters,
        datasets=train_datasets(cfg, dataset_info, iters, world),
        callbacks=[TuneReportCallback()],
    )
    trainer.fit()


def _scheduler(cfg: Config) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sch = cfg.tune.scheduler
    if sch.kind == "fifo":
        return FIFOScheduler()
    validations = cfg.schedule.epochs // max(cfg.eval.every_epochs, 1) if cfg.eval.every_epochs else None
    max_t = sch.max_t or validations or 100
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=max_t,
        grace_period=min(sch.grace_period, max_t),
        reduction_factor=sch.reduction_factor,
    )


def _search_alg(cfg: Config) -> Any:
    """Random/grid sampling, or Optuna's Bayesian search (with ASHA still stopping weak trials)."""
    from ray import tune

    if cfg.tune.search == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        grids = [key for key, spec in cfg.tune.search_space.items() if "grid" in spec]
        if grids:
            raise ConfigError(
                f"tune.search=optuna samples its own points: tune.search_space.{grids[0]} cannot be a grid"
            )
        optuna = OptunaSearch(metric=cfg.tune.metric, mode=cfg.tune.mode, seed=cfg.tune.seed)
        return ConcurrencyLimiter(optuna, max_concurrent=cfg.tune.max_concurrent)
    # The generator enforces the concurrency itself when it is given explicitly.
    return tune.search.BasicVariantGenerator(random_state=cfg.tune.seed, max_concurrent=cfg.tune.max_concurrent)


def build_tuner(cfg: Config, sweep: Storage, name: str, dataset_info: Any, restore: bool) -> Any:
    from ray import tune

    from u2pl_ray.sweep.space import build_search_space

    base = config_to_dict(cfg)
    base["storage"]["checkpoint_every_iters"] = 0  # every report then carries the validation metric
    base["tracking"] = {"mlflow": None, "wandb": None}  # a sweep tracks its trials with Tune's callbacks
    space = build_search_space(base, cfg.tune.search_space)
    trainable = tune.with_resources(
        functools.partial(run_trial, base=base, dataset_info=dataset_info, trials_uri=sweep.join(name, "trials").uri),
        {"CPU": 0.01},  # the trial function only waits; its Train workers hold the real resources
    )
    if restore:
        return tune.Tuner.restore(
            sweep.join(name).path,
            trainable=trainable,
            resume_errored=True,
            storage_filesystem=None if sweep.is_local else sweep.fs,
        )
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=cfg.tune.metric,
            mode=cfg.tune.mode,
            num_samples=cfg.tune.num_samples,
            max_concurrent_trials=cfg.tune.max_concurrent,
            scheduler=_scheduler(cfg),
            search_alg=_search_alg(cfg),
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=sweep.path,
            storage_filesystem=None if sweep.is_local else sweep.fs,
            callbacks=tune_callbacks(cfg),  # MLflow / W&B: one tracked run per trial
        ),
    )


def write_outputs(cfg: Config, grid: Any, out: Storage) -> dict[str, str]:
    from u2pl_ray.sweep.report import best_config_yaml, plot_params, rows_from_results, table_csv, table_text

    keys = list(cfg.tune.search_space)
    rows = rows_from_results(grid, cfg.tune.metric, keys)
    print(table_text(rows, keys, cfg.tune.metric))
    paths = {
        "results": out.join("results.csv"),
        "best": out.join("best_config.yaml"),
        "plot": out.join("miou_vs_params.png"),
    }
    paths["results"].write_text(table_csv(rows, keys, cfg.tune.metric))
    scored = [r for r in rows if r.best_metric is not None]
    if scored:
        best = (
            max(scored, key=lambda r: r.best_metric)
            if cfg.tune.mode == "max"
            else min(scored, key=lambda r: r.best_metric)
        )
        paths["best"].write_text(best_config_yaml(config_to_dict(cfg), best))
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "plot.png"
        plot_params(rows, keys, cfg.tune.metric, png)
        with out.fs.open_output_stream(paths["plot"].path) as dst:
            dst.write(png.read_bytes())
    return {k: v.uri for k, v in paths.items()}


def resolve_sweep(args: argparse.Namespace) -> tuple[Config, Storage, str]:
    """Config, storage root and name of the sweep; a resumed sweep keeps the config it was started with."""
    if args.resume:
        probe = load_config(args.config or DEFAULT_CONFIG, [])
        base = args.resume if ("/" in args.resume or "://" in args.resume) else f"{probe.storage.path}/{args.resume}"
        folder = resolve_storage(base)
        saved = folder.join(SWEEP_CONFIG)
        if not saved.exists():
            raise ConfigError(f"--resume {args.resume}: {saved.uri} not found (is this a u2pl-ray sweep folder?)")

        from u2pl_ray.config import build_config
        from u2pl_ray.config.loader import apply_overrides

        data = apply_overrides(load_yaml(saved.read_text()), args.overrides)
        cfg = build_config(data, f"{saved.uri} with --set {' '.join(args.overrides)}")
        parent = base.split("?", 1)[0].rstrip("/").rsplit("/", 1)[0] + (
            ("?" + base.split("?", 1)[1]) if "?" in base else ""
        )
        return cfg, resolve_storage(parent), folder.name
    cfg = load_config(args.config or DEFAULT_CONFIG, args.overrides)
    name = cfg.tune.name or f"{cfg.name}-sweep-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    return cfg, resolve_storage(cfg.storage.path), name


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from u2pl_ray.data.errors import DataError
    from u2pl_ray.data.stream import load_dataset_info

    try:
        cfg, sweep, name = resolve_sweep(args)
        info = load_dataset_info(cfg.data)
        # Refuses what every trial would fail on (a u2pl sweep over a split without unlabelled images).
        epoch_iterations(cfg, info, cfg.scaling.num_workers)
        init_ray(args.address)
        tuner = build_tuner(cfg, sweep, name, info, restore=bool(args.resume))
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.resume:
        sweep.join(name, SWEEP_CONFIG).write_text(dump_config(cfg))
    print(
        f"sweep {name}: {cfg.tune.num_samples} sample(s), {cfg.tune.max_concurrent} at a time; "
        f"storage {sweep.join(name).uri}",
        flush=True,
    )
    grid = tuner.fit()
    outputs = write_outputs(cfg, grid, sweep.join(name))
    for what, uri in outputs.items():
        print(f"{what}: {uri}")
    return 0 if any(r.error is None for r in grid) else 1


if __name__ == "__main__":
    sys.exit(main())
