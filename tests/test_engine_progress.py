"""The driver's progress printer: terminal lines and the TensorBoard scalars the curves are drawn from."""

from __future__ import annotations

import io
import time

import pytest

from u2pl_ray.engine.progress import ProgressPrinter
from u2pl_ray.viz.curves import tensorboard_series


def test_validation_keeps_the_reports_training_values_in_tensorboard(tmp_path):
    out = io.StringIO()
    printer = ProgressPrinter(total_epochs=2, stream=out, interval_s=0.0, tensorboard_dir=tmp_path)
    printer.handle(
        [{"kind": "report", "iteration": 10, "epoch": 0, "max_iters": 20, "total": 0.5, "drop_percent": 92.0}]
    )
    # The validation at the same step carries the period's means (here 90, the 88/92 average).
    printer.handle(
        [
            {
                "kind": "validation",
                "iteration": 10,
                "epoch": 0,
                "drop_percent": 90.0,
                "val/miou": 0.25,
                "val/student/miou": 0.25,
                "best_miou": 0.25,
            }
        ]
    )
    # A validation with no report at its step is the only source of that step's training values.
    printer.handle(
        [
            {
                "kind": "validation",
                "iteration": 15,
                "epoch": 1,
                "drop_percent": 96.0,
                "val/miou": 0.3,
                "val/student/miou": 0.3,
                "best_miou": 0.3,
            }
        ]
    )
    printer.close()

    series = tensorboard_series(tmp_path)
    assert series["train/drop_percent"] == [(10, 92.0), (15, 96.0)]
    assert [(s, round(v, 4)) for s, v in series["val/miou"]] == [(10, 0.25), (15, 0.3)]
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("epoch 1/2 | it 10/20 (50.0%) | loss 0.500")
    assert lines[1] == "validation at it 10: mIoU student 25.00 (best 25.00)"


def test_each_validation_flushes_tensorboard_and_calls_the_sync_hook(tmp_path):
    import io

    from u2pl_ray.engine.progress import ProgressPrinter

    seen = []

    def sync():  # what train.py does for an s3:// run: copy the staged files to storage
        seen.append(sum(p.stat().st_size for p in (tmp_path / "tb").rglob("*events*")))

    printer = ProgressPrinter(2, stream=io.StringIO(), tensorboard_dir=tmp_path / "tb", on_validation=sync)
    printer.handle([{"kind": "report", "iteration": 2, "total": 1.0}])
    assert seen == []
    printer.handle([{"kind": "validation", "iteration": 4, "val/miou": 0.3, "val/student/miou": 0.3}])
    assert len(seen) == 1 and seen[0] > 0  # the scalars were on disk when the hook ran
    printer.close()


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_a_lost_progress_board_does_not_end_the_run_the_driver_watches():
    """The board lives on the driver's node; should it still be lost, the driver's loop logs and goes on
    (it died with ActorUnavailableError when the board had landed on a lost worker node)."""
    import ray
    from train_support import local_ray

    from u2pl_ray.engine.progress import start_board
    from u2pl_ray.train import fit_with_progress

    class Trainer:  # stands in for TorchTrainer: fit() outlives the board
        def fit(self):
            time.sleep(3)
            return "result"

    with local_ray():
        board = start_board()
        board.push.remote({"kind": "report", "iteration": 1})
        assert ray.get(board.drain.remote()) == [{"kind": "report", "iteration": 1}]
        ray.kill(board)
        out = io.StringIO()
        result, error = fit_with_progress(Trainer(), board, ProgressPrinter(total_epochs=1, stream=out))
    assert (result, error) == ("result", None)
