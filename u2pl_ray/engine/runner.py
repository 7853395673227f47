"""The per-worker training loop: one object with small methods, in the official order of operations.

setup -> (resume) -> for each epoch: for each batch: train_step -> validate/checkpoint when due.
Everything a restart needs goes through `save_state` / `load_state` (u2pl_ray.engine.state).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from u2pl_ray.config import Config
from u2pl_ray.engine import collectives as coll
from u2pl_ray.engine.faults import FaultInjector, NonFiniteLossError
from u2pl_ray.engine.metrics_window import MetricsWindow
from u2pl_ray.engine.session import Session
from u2pl_ray.engine.setup import Components, build_components
from u2pl_ray.engine.state import load_state, save_state
from u2pl_ray.engine.validation import run_validation
from u2pl_ray.method.teacher import set_poly_lr

log = logging.getLogger(__name__)
# Training figures kept in the run's history next to each validation (the curves of `report`).
HISTORY_KEYS = ("sup", "unsup", "contra", "total", "reliable_share", "drop_percent", "lr", "images_per_s")


@dataclass
class Progress:
    """Where the run is. Saved in every checkpoint."""

    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already trained
    iteration: int = 0  # global, 0-based index of the next iteration
    best_miou: float = -1.0
    best_iteration: int = -1
    evaluated_iteration: int = -1  # the iteration of the last validation checkpoint (validate_and_checkpoint)
    nonfinite_in_row: int = 0
    nonfinite_total: int = 0
    validations: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    resumes: list[dict[str, float]] = field(default_factory=list)  # {iteration, unix_time} per restart


class Runner:
    def __init__(
        self, cfg: Config, session: Session, dataset_info: Any, iters_per_epoch: int, run_uri: str | None = None
    ):
        self.cfg = cfg
        self.run_uri = run_uri  # where rank 0 writes pictures; None = nowhere
        self.session = session
        self.info = dataset_info
        self.iters_per_epoch = iters_per_epoch
        self.max_iters = iters_per_epoch * cfg.schedule.epochs
        self.progress = Progress()
        self.window = MetricsWindow()
        self.faults = FaultInjector(cfg.fault, run_uri)
        self.c: Components | None = None
        self._run_start = time.perf_counter()
        self._images_seen = 0
        self._picture_samples: list | None = None
        self.stopping = False

    # ---- setup --------------------------------------------------------------------------------

    def setup(self) -> None:
        self.c = build_components(self.cfg, self.session, self.info, self.iters_per_epoch)
        with self.session.latest_checkpoint() as directory:
            if directory is not None:
                self.progress = load_state(directory, self.c, self.session.rank, Progress)
                # Which checkpoint a restart used, and when: the summary shows it, bench_faults times it.
                self.progress.resumes.append({"iteration": self.progress.iteration, "unix_time": time.time()})
                log.info("resumed from %s at iteration %d", directory, self.progress.iteration)

    @property
    def is_rank0(self) -> bool:
        return self.session.rank == 0

    # ---- the loop -----------------------------------------------------------------------------

    def run(self) -> Progress:
        if self.c is None:
            self.setup()
        cfg = self.cfg
        while self.progress.epoch < cfg.schedule.epochs and not self.stopping:
            self.train_epoch()
            if self.stopping:
                break
            self.progress.epoch += 1
            self.progress.batch_in_epoch = 0
            # Not twice for one iteration: eval.every_iters, a stop, or the run this one resumed may have
            # validated the epoch's last batch already.
            if self.epoch_end_due(self.progress.epoch) and self.progress.evaluated_iteration != self.progress.iteration:
                self.validate_and_checkpoint()
        return self.progress

    def epoch_end_due(self, epochs_done: int) -> bool:
        """Whether the end of epoch `epochs_done` validates and checkpoints (every_epochs, or the last)."""
        every = self.cfg.eval.every_epochs
        return bool(every and epochs_done % every == 0) or epochs_done == self.cfg.schedule.epochs

    def train_epoch(self) -> None:
        assert self.c is not None
        epoch = self.progress.epoch
        batches = self.c.stream.epoch(epoch, start=self.progress.batch_in_epoch)
        wait_start = time.perf_counter()
        for batch in batches:
            self.window.add_time("time/data_wait_s", time.perf_counter() - wait_start)
            self.train_step(batch)
            self.progress.batch_in_epoch += 1
            self.progress.iteration += 1
            it = self.progress.iteration
            if it % self.cfg.report_every_iters == 0:
                self.publish_progress()
                if coll.any_rank(self.is_rank0 and self.session.stop_requested(), self.c.device):
                    self.stopping = True
                    self.validate_and_checkpoint(reason="stop")
                    return
            epoch_end = self.progress.batch_in_epoch == self.iters_per_epoch
            if self.cfg.eval.every_iters and it % self.cfg.eval.every_iters == 0:
                self.validate_and_checkpoint()
            elif (
                self.cfg.storage.checkpoint_every_iters
                and it % self.cfg.storage.checkpoint_every_iters == 0
                and not (epoch_end and self.epoch_end_due(epoch + 1))
            ):
                # (at a validating epoch end, that validation's checkpoint is this iteration's)
                self.checkpoint(self.progress_metrics(self.window.summary()), name=None)
            wait_start = time.perf_counter()

    def set_learning_rate(self) -> float:
        assert self.c is not None
        optimizer = self.c.optimizer
        lrs = set_poly_lr(
            optimizer,
            [g["initial_lr"] for g in optimizer.param_groups],
            self.c.method.lr_iteration(self.progress.iteration),
            self.max_iters,
            self.cfg.schedule.poly_power,
        )
        return lrs[0]

    def train_step(self, batch: Any) -> None:
        assert self.c is not None
        c, prog = self.c, self.progress
        start = time.perf_counter()
        self.faults.before_step(prog.iteration)
        lr = self.set_learning_rate()
        inputs = c.to_device(batch)
        c.student.train()
        loss, metrics = c.method.losses(
            c.student, c.teacher, inputs, epoch=prog.epoch, iteration=prog.iteration, autocast=c.autocast
        )
        loss = self.faults.corrupt_loss(prog.iteration, loss)
        bad = coll.any_rank(not bool(torch.isfinite(loss.detach()).item()), c.device)
        c.optimizer.zero_grad(set_to_none=True)
        if bad:
            self._skip_nonfinite(metrics)
        else:
            prog.nonfinite_in_row = 0
            c.backward_and_step(loss)
        if c.teacher is not None:
            with c.timer("ema"):
                if not bad:
                    c.method.update_teacher(c.teacher, c.unwrapped_student, epoch=prog.epoch, iteration=prog.iteration)
                # The teacher's train-mode forward moved its BN statistics on each rank, skipped step or not.
                coll.broadcast_buffers_(c.teacher)
        n_images = inputs.image_l.shape[0] + (inputs.image_u.shape[0] if inputs.image_u is not None else 0)
        self._images_seen += n_images * self.session.world_size
        metrics = {k: float(v) for k, v in metrics.items()}
        metrics.update(lr=lr, step_s=time.perf_counter() - start)
        metrics.update(c.timer.pop())
        self.window.add(metrics, images=n_images * self.session.world_size)

    def _skip_nonfinite(self, metrics: dict[str, Any]) -> None:
        prog = self.progress
        prog.nonfinite_in_row += 1
        prog.nonfinite_total += 1
        self.window.add_count("nonfinite_skipped", 1)
        log.warning("non-finite loss at iteration %d skipped (%d in a row)", prog.iteration, prog.nonfinite_in_row)
        if prog.nonfinite_in_row >= self.cfg.max_nonfinite_steps:
            parts = ", ".join(f"{k}={float(v):.4g}" for k, v in metrics.items() if k in ("sup", "unsup", "contra"))
            raise NonFiniteLossError(
                f"the loss was not finite for {prog.nonfinite_in_row} iterations in a row "
                f"(up to iteration {prog.iteration}; {parts}); stopping. Lower optim.lr, check the data, "
                f"or raise max_nonfinite_steps (now {self.cfg.max_nonfinite_steps})."
            )

    # ---- progress, validation and checkpoints ---------------------------------------------------

    def publish_progress(self) -> None:
        assert self.c is not None
        if not self.is_rank0:
            return
        values = self.window.recent()
        values.update(
            iteration=self.progress.iteration,
            epoch=self.progress.epoch,
            max_iters=self.max_iters,
            best_miou=self.progress.best_miou,
        )
        values.update(self.c.method.progress_values())
        values.update({f"data/{k}": float(v) for k, v in self.c.stream.counters().items()})
        self.session.progress(values)

    def validate(self) -> dict[str, float]:
        """mIoU of the student, and of the teacher once the method selects it."""
        assert self.c is not None
        results: dict[str, float] = {}
        with_teacher = self.c.teacher is not None and self.c.method.teacher_selected(
            self.cfg.method, self.progress.epoch
        )
        # Without SyncBatchNorm each rank's student keeps its own running statistics: score the student that
        # is saved, rank 0's, on every rank.
        coll.broadcast_buffers_(self.c.unwrapped_student)
        models = {"student": self.c.unwrapped_student}
        if with_teacher and self.c.teacher is not None:
            models["teacher"] = self.c.teacher
        for name, model in models.items():
            was_training = model.training
            model.eval()
            scores = run_validation(model, self.cfg, self.info, self.session, self.c.device, self.c.autocast)
            model.train(was_training)
            results.update({f"val/{name}/{k}": v for k, v in scores.items()})
        chosen = "teacher" if with_teacher else "student"
        results["val/miou"] = results[f"val/{chosen}/miou"]
        return results

    def validate_and_checkpoint(self, reason: str = "validation") -> None:
        assert self.c is not None
        prog = self.progress
        started = time.perf_counter()
        val = self.validate() if self.cfg.eval.every_epochs or self.cfg.eval.every_iters else {}
        metrics = self.window.summary()
        metrics["time/validation_s"] = time.perf_counter() - started
        metrics.update(val)
        metrics.update({f"data/{k}": float(v) for k, v in self.c.stream.counters().items()})  # cumulative
        if val:
            prog.validations += 1
            self.maybe_draw_pictures()
            if val["val/miou"] > prog.best_miou:
                prog.best_miou, prog.best_iteration = val["val/miou"], prog.iteration
            train = {k: metrics[k] for k in HISTORY_KEYS if k in metrics}
            prog.history.append({"iteration": prog.iteration, "epoch": prog.epoch, **train, **val})
        prog.evaluated_iteration = prog.iteration
        report: dict[str, Any] = {**self.progress_metrics(metrics), "stop_reason": reason}
        self.checkpoint(report, name=f"checkpoint_{prog.iteration:08d}")
        self.window.reset()

    def progress_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """`metrics` with where the run is: every report carries its iteration (the console and
        TensorBoard place it by that)."""
        prog = self.progress
        out = {
            **metrics,
            "iteration": prog.iteration,
            "epoch": prog.epoch,
            "max_iters": self.max_iters,
            "best_miou": prog.best_miou,
            "best_iteration": prog.best_iteration,
            "wall_s": time.perf_counter() - self._run_start,
        }
        if self.c is not None and self.c.device.type == "cuda":  # this rank's peak since the run started
            out["gpu/peak_memory_gib"] = torch.cuda.max_memory_allocated(self.c.device) / 2**30
        return out

    def maybe_draw_pictures(self) -> None:
        """Rank 0 draws the pseudo-label grid every `eval.images_every` validations."""
        every = self.cfg.eval.images_every
        if not (self.is_rank0 and self.run_uri and every and self.progress.validations % every == 0):
            return
        from u2pl_ray.viz.pseudo_labels import first_val_samples, write_pseudo_label_grid

        assert self.c is not None
        method = self.c.method
        percent = method.picture_drop_percent(self.progress.epoch)
        if percent is None:
            return
        if self._picture_samples is None:
            self._picture_samples = first_val_samples(self.cfg, self.info, 3)
        teacher = self.c.teacher if method.teacher_selected(self.cfg.method, self.progress.epoch) else None
        try:
            write_pseudo_label_grid(
                self.run_uri,
                self.progress.iteration,
                self.c.unwrapped_student,
                teacher,
                self._picture_samples,
                percent,
                self.cfg,
                classes=self.c.classes,
            )
        except OSError as exc:  # a picture is not worth a failed run
            log.warning("could not write the pseudo-label picture: %s", exc)

    def checkpoint(self, metrics: dict[str, Any], name: str | None) -> None:
        assert self.c is not None
        name = name or f"checkpoint_{self.progress.iteration:08d}"
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="u2pl-ckpt-") as tmp:
            directory = Path(tmp) / name
            directory.mkdir()
            save_state(directory, self.c, self.progress, self.session.rank, self.cfg, metrics, self.faults)
            self.session.report(metrics, directory, name)
        self.window.add_time("time/checkpoint_s", time.perf_counter() - started)  # shows in the next report
