"""`python -m u2pl_ray.train [--config FILE] [--set key=value ...] [--resume RUN]`

Runs U2PL on Ray Train. Inside a Ray cluster or a submitted job it uses that cluster; otherwise it
starts an embedded local Ray. With no arguments it runs the demo (configs/demo.yaml): the built-in
synthetic dataset, local storage under ./runs/.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from u2pl_ray import __version__
from u2pl_ray.config import Config, ConfigError, build_config, dump_config, load_config, load_yaml
from u2pl_ray.config.loader import apply_overrides
from u2pl_ray.data.errors import DataError
from u2pl_ray.engine.checkpoint import CheckpointError
from u2pl_ray.engine.launch import (
    Storage,
    build_trainer,
    epoch_iterations,
    init_ray,
    resolve_storage,
    run_name,
    train_datasets,
    write_run_config,
)
from u2pl_ray.method import method_class

log = logging.getLogger("u2pl_ray.train")
REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "configs" / "demo.yaml"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m u2pl_ray.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", help=f"YAML config (default: {DEFAULT_CONFIG.relative_to(REPO)})")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set method.drop_percent=70 (repeatable)",
    )
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue a stopped or finished run: its name under storage.path, or its folder/URI",
    )
    p.add_argument("--address", help="Ray address (default: RAY_ADDRESS, a running local cluster, or embedded)")
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config (bases, --set, resume) as YAML and exit"
    )
    return p


def resolve_run(args: argparse.Namespace) -> tuple[Config, str, Storage]:
    """The config, run name and storage root of this invocation (a resumed run keeps its config)."""
    if args.resume:
        probe = load_config(args.config or DEFAULT_CONFIG, args.overrides)
        base = args.resume if ("/" in args.resume or "://" in args.resume) else f"{probe.storage.path}/{args.resume}"
        run = resolve_storage(base)
        saved = run.join("config.yaml")
        if not saved.exists():
            raise ConfigError(f"--resume {args.resume}: {saved.uri} not found (is this a u2pl-ray run folder?)")

        data = apply_overrides(load_yaml(saved.read_text()), args.overrides)
        name = run.name
        data.setdefault("storage", {})
        data["storage"]["name"] = name
        data["storage"]["path"] = _parent_uri(run.uri)
        cfg = build_config(data, f"{saved.uri} with --set {' '.join(args.overrides)}")
    else:
        cfg = load_config(args.config or DEFAULT_CONFIG, args.overrides)
        name = run_name(cfg)
    return cfg, name, resolve_storage(cfg.storage.path)


def _parent_uri(uri: str) -> str:
    """The folder holding `uri`, keeping its client options (an S3 endpoint, say)."""
    from u2pl_ray.data.fs import split_query

    location, query = split_query(uri)
    parent = location.rstrip("/").rsplit("/", 1)[0]
    return f"{parent}?{query}" if query else parent


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class _StopOnSignal:
    """First Ctrl-C / SIGTERM: ask the workers to checkpoint and stop. Second: abort."""

    def __init__(self, board: Any):
        self.board = board
        self.count = 0
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt
        print(f"\n{signal.Signals(signum).name}: stopping after a checkpoint (again to abort)", flush=True)
        self.board.request_stop.remote()

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def fit_with_progress(trainer: Any, board: Any, printer: Any) -> tuple[Any, BaseException | None]:
    import ray

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = trainer.fit()
        except BaseException as exc:  # reported by the caller
            box["error"] = exc

    def drain() -> None:
        # Progress is a courtesy: a lost board (its node gone) must not end the run the driver watches.
        try:
            printer.handle(ray.get(board.drain.remote(), timeout=30))
        except (ray.exceptions.RayError, TimeoutError) as exc:
            log.warning("progress board unavailable (%s); training goes on", type(exc).__name__)

    thread = threading.Thread(target=target, name="trainer-fit", daemon=True)
    with _StopOnSignal(board):
        thread.start()
        while thread.is_alive():
            thread.join(timeout=1.0)
            drain()
    drain()
    printer.close()
    return box.get("result"), box.get("error")


def build_summary(
    cfg: Config, run: Storage, result: Any, wall_s: float, config_path: str | None, global_batch: int
) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if result is not None and result.checkpoint is not None:
        from u2pl_ray.engine.checkpoint import META

        with result.checkpoint.as_directory() as directory:
            path = Path(directory) / META
            meta = json.loads(path.read_text()) if path.exists() else {}
    history = meta.get("history", [])
    metrics = meta.get("metrics", {})
    iterations = int(meta.get("iteration", 0))

    def series(name: str) -> list[float]:
        return [h[f"val/{name}/miou"] for h in history if f"val/{name}/miou" in h]

    per_model = {
        n: {"best_miou": max(series(n), default=None), "last_miou": (series(n) or [None])[-1]}
        for n in ("student", "teacher")
    }
    chosen = [h["val/miou"] for h in history if "val/miou" in h]
    return {
        "best_miou": max(chosen, default=None),
        "last_miou": chosen[-1] if chosen else None,
        "student": per_model["student"],
        "teacher": per_model["teacher"],
        "iterations": iterations,
        "epochs_done": int(meta.get("epoch", 0)),
        "wall_s": round(wall_s, 2),
        "images_per_s": round(metrics.get("images_per_s_run", iterations * global_batch / max(wall_s, 1e-9)), 3),
        "stop_reason": metrics.get("stop_reason"),
        "resumes": meta.get("resumes", []),
        "run_dir": run.uri,
        "checkpoint": result.checkpoint.path if result is not None and result.checkpoint is not None else None,
        "config_path": config_path,
        "variant": cfg.method.variant,
        "version": __version__,
        "git_revision": git_revision(),
        "history": history,
    }


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parser().parse_args(argv)
    try:
        cfg, name, storage = resolve_run(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    try:
        return run_training(cfg, name, storage, config_path=args.config or str(DEFAULT_CONFIG), address=args.address)
    except (DataError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_training(
    cfg: Config, name: str, storage: Storage, *, config_path: str | None = None, address: str | None = None
) -> int:
    import ray

    from u2pl_ray.data.stream import load_dataset_info
    from u2pl_ray.engine.progress import ProgressPrinter, start_board

    started = time.monotonic()
    info = load_dataset_info(cfg.data)
    world = max(1, cfg.scaling.num_workers)
    iters = epoch_iterations(cfg, info, world)
    if init_ray(address):
        from u2pl_ray.data.stream import check_cpu_budget

        check_cpu_budget(
            cfg.data, cfg.scaling.num_workers, cfg.scaling.cpus_per_worker, ray.cluster_resources().get("CPU", 0)
        )
    run = storage.join(name)
    write_run_config(run, cfg)
    print(
        f"run {name}: {cfg.schedule.epochs} epochs x {iters} iterations on {world} worker(s); storage {run.uri}",
        flush=True,
    )
    print(f"data: {describe_data(cfg, info)}", flush=True)
    board = start_board()
    # TensorBoard writes local files; for object storage they are staged here and uploaded at the end.
    tb_dir = Path(run.path) / "tensorboard" if run.is_local else Path(tempfile.mkdtemp(prefix="u2pl-tb-"))
    # An s3:// run's TensorBoard files reach storage at every validation, not only at the end.
    sync = (lambda: upload_tensorboard(run, tb_dir)) if cfg.tensorboard and not run.is_local else None
    printer = ProgressPrinter(
        cfg.schedule.epochs, tensorboard_dir=tb_dir if cfg.tensorboard else None, on_validation=sync
    )
    trainer = build_trainer(
        cfg,
        name=name,
        storage=storage,
        dataset_info=info,
        iters_per_epoch=iters,
        datasets=train_datasets(cfg, info, iters, world),
        board=board,
    )
    try:
        result, error = fit_with_progress(trainer, board, printer)
        wall = time.monotonic() - started
        finish_artefacts(run, tb_dir if cfg.tensorboard else None)
    finally:
        if not run.is_local:
            shutil.rmtree(tb_dir, ignore_errors=True)  # the staging copy; storage has the events now
    if error is not None:
        print(f"error: training failed: {error}", file=sys.stderr)
        print(f"resume with: python -m u2pl_ray.train --resume {run.uri}", file=sys.stderr)
        return 1
    global_batch = cfg.data.batch_size * world * (2 if method_class(cfg.method.name).needs_unlabeled else 1)
    summary = build_summary(cfg, run, result, wall, config_path, global_batch)
    run.join("summary.json").write_text(json.dumps(summary, indent=1))
    _print_summary(summary, run.join("summary.json").uri)
    ray.kill(board)
    return 0


def describe_data(cfg: Config, info: Any) -> str:
    """The dataset in one line; for the built-in synthetic one, which objects it drew (Fashion-MNIST
    when Debian's dataset-fashion-mnist package is installed, else procedural shapes)."""
    text = info.summary()
    if cfg.data.root is None:
        from u2pl_ray.data.synthetic.generator import resolved_object_kind

        kind = resolved_object_kind(cfg.data.synthetic)
        chose = cfg.data.synthetic.object_source == "auto" and kind != "fashion_mnist"
        hint = " (install Debian's dataset-fashion-mnist for Fashion-MNIST objects)" if chose else ""
        text += f"; objects: {kind}{hint}"
    return text


def upload_tensorboard(run: Storage, tb_dir: Path) -> None:
    """The staged TensorBoard files of an object-storage run to RUN/tensorboard (a failure is logged)."""
    import pyarrow.fs as pafs

    try:
        if tb_dir.exists():
            target = run.join("tensorboard")
            run.fs.create_dir(target.path, recursive=True)
            pafs.copy_files(
                str(tb_dir),
                target.path,
                source_filesystem=pafs.LocalFileSystem(),
                destination_filesystem=run.fs,
                use_threads=False,
            )
    except Exception as exc:  # noqa: BLE001 - a courtesy; the checkpoints are what count
        log.warning("could not copy the TensorBoard files to %s: %s", run.uri, exc)


def finish_artefacts(run: Storage, tb_dir: Path | None) -> None:
    """TensorBoard files to object storage, and the training curves as PNGs; neither may fail a run."""
    if tb_dir is not None and not run.is_local:
        upload_tensorboard(run, tb_dir)
    try:
        from u2pl_ray.viz import write_run_curves

        write_run_curves(run.uri)
    except Exception as exc:  # noqa: BLE001 - artefacts are a courtesy; the checkpoints are what count
        log.warning("could not write the run's curves or TensorBoard files: %s", exc)


def _print_summary(summary: dict[str, Any], path: str) -> None:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    print(
        f"\ndone: {summary['iterations']} iterations in {summary['wall_s']:.0f} s "
        f"({summary['images_per_s']:.1f} images/s)"
    )
    print(
        f"mIoU best {pct(summary['best_miou'])}, last {pct(summary['last_miou'])} | "
        f"student best {pct(summary['student']['best_miou'])} | teacher best {pct(summary['teacher']['best_miou'])}"
    )
    if summary.get("stop_reason") == "stop":
        print(f"stopped early; continue with: python -m u2pl_ray.train --resume {summary['run_dir']}")
    print(f"summary: {path}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
