"""Faults during training on a real local Ray (two CPU workers, local storage): a lost worker, a
checkpoint cut short, a damaged newest checkpoint, non-finite losses. Each run is compared with an
uninterrupted run of the same deterministic config, to the bit."""

from __future__ import annotations

import shutil

import pytest
from train_support import assert_same_state, checkpoint_names, load_checkpoint, local_ray, read_json, train

from u2pl_ray.engine.checkpoint import CheckpointError, verify_checkpoint

pytestmark = [pytest.mark.ray]


@pytest.fixture(scope="module")
def ray_runs(tmp_path_factory):
    """One local Ray for the module, the common settings, and the uninterrupted reference run."""
    root = tmp_path_factory.mktemp("reliability-runs")
    cache = tmp_path_factory.mktemp("synthetic-cache")
    common = [
        f"--set=storage.path={root}",
        f"--set=data.cache_dir={cache}",
        "--set=data.deterministic=true",
        "--set=scaling.torch_threads=1",
        "--set=storage.checkpoint_every_iters=3",
        "--set=eval.every_epochs=0",
        "--set=method.sup_only_epochs=1",
    ]
    with local_ray():
        assert train(*common, "--set=storage.name=straight") == 0
        yield root, common


def final_state(run_dir):
    return load_checkpoint(run_dir / "checkpoint_00000008")


def resumed_at(state):
    """The iterations a run was resumed from, oldest first."""
    return [r["iteration"] for r in state["state"]["progress"]["resumes"]]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_lost_worker_is_restarted_from_the_newest_checkpoint(ray_runs, tmp_path):
    root, common = ray_runs
    marker = tmp_path / "fired"
    # A worker process dies before iteration 5 (after the checkpoint of iteration 3); one restart allowed.
    rc = train(
        *common,
        "--set=storage.name=lost-worker",
        "--set=max_failures=1",
        "--set=fault.kind=exit",
        "--set=fault.fail_at_iter=5",
        f"--set=fault.once_marker={marker}",
    )
    assert rc == 0
    assert marker.read_text().startswith("exit fault fired at iteration 5")
    run = root / "lost-worker"
    state = final_state(run)
    assert resumed_at(state) == [3]
    assert [r["iteration"] for r in read_json_local(run / "summary.json")["resumes"]] == [3]
    assert_same_state(final_state(root / "straight"), state)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_checkpoint_cut_short_leaves_the_previous_one_in_charge(ray_runs, tmp_path):
    root, common = ray_runs
    marker = tmp_path / "fired"
    rc = train(
        *common,
        "--set=storage.name=torn",
        "--set=fault.kind=checkpoint",
        "--set=fault.fail_at_iter=6",
        f"--set=fault.once_marker={marker}",
    )
    assert rc == 1, "no restarts allowed (tiny.yaml: max_failures 0): the run fails"
    run = root / "torn"
    # The checkpoint of iteration 6 reached storage without its meta.json: never usable.
    assert checkpoint_names(_local(), str(run)) == ["checkpoint_00000003", "checkpoint_00000006"]
    assert (run / "checkpoint_00000006" / "state.pt").is_file()
    with pytest.raises(CheckpointError, match="meta.json is missing"):
        verify_checkpoint(run / "checkpoint_00000006")
    previous = verify_checkpoint(run / "checkpoint_00000003")
    assert previous["iteration"] == 3
    assert train(f"--resume={run}") == 0
    state = final_state(run)
    assert resumed_at(state) == [3], "resumed from iteration 3"
    assert_same_state(final_state(root / "straight"), state)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_damaged_newest_checkpoint_falls_back_then_all_damaged_is_a_clear_error(ray_runs, capsys):
    root, common = ray_runs
    # A finished copy of the reference run whose newest checkpoint was damaged in storage.
    run = root / "damaged"
    shutil.copytree(root / "straight", run)
    assert checkpoint_names(_local(), str(run)) == ["checkpoint_00000006", "checkpoint_00000008"]
    newest = run / "checkpoint_00000008" / "state.pt"
    newest.write_bytes(newest.read_bytes()[:-100])
    assert train(f"--resume={run}") == 0
    state = final_state(run)
    assert resumed_at(state) == [6], "fell back to iteration 6"
    assert_same_state(final_state(root / "straight"), state)
    # Every checkpoint damaged: the run stops and names them instead of training from scratch.
    # (Ray's checkpoint manager has pruned by now: damage whatever is left.)
    for name in checkpoint_names(_local(), str(run)):
        (run / name / "state.pt").write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert train(f"--resume={run}") == 1
    err = capsys.readouterr().err
    assert f"no usable checkpoint next to {run}/checkpoint_00000008" in err


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_nonfinite_losses_are_skipped_and_counted_then_a_clear_stop(ray_runs, capsys):
    root, common = ray_runs
    # Two non-finite losses (iterations 4-5) are skipped; three allowed in a row: the run finishes.
    assert (
        train(
            *common,
            "--set=storage.name=nan-twice",
            "--set=fault.kind=nan",
            "--set=fault.fail_at_iter=4",
            "--set=fault.nan_steps=2",
            "--set=max_nonfinite_steps=3",
        )
        == 0
    )
    progress = final_state(root / "nan-twice")["state"]["progress"]
    assert progress["nonfinite_total"] == 2 and progress["nonfinite_in_row"] == 0
    assert progress["iteration"] == 8
    # The checkpoint right after the skipped steps: the teacher's BN statistics, moved by its train-mode
    # forwards on each rank, were still made equal across ranks.
    after = load_checkpoint(root / "nan-twice" / "checkpoint_00000006")
    assert after["rank_0"]["teacher_sha256"] == after["rank_1"]["teacher_sha256"]
    capsys.readouterr()
    # Non-finite from iteration 1 on: a stop after three in a row, with a message that says why.
    assert (
        train(
            *common,
            "--set=storage.name=nan-always",
            "--set=fault.kind=nan",
            "--set=fault.fail_at_iter=1",
            "--set=max_nonfinite_steps=3",
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "the loss was not finite for 3 iterations in a row (up to iteration 3" in err
    assert "max_nonfinite_steps" in err


def _local():
    import pyarrow.fs as pafs

    return pafs.LocalFileSystem()


def read_json_local(path):
    return read_json(_local(), str(path))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resume_finds_checkpoints_that_rays_own_list_missed(ray_runs):
    root, common = ray_runs
    # A failure between sealing a checkpoint and saving Ray's checkpoint list leaves the list behind:
    # the run folder is the truth, not the list.
    run = root / "no-list"
    shutil.copytree(root / "straight", run)
    (run / "checkpoint_manager_snapshot.json").unlink()
    shutil.rmtree(run / "checkpoint_00000008")  # so that the resumed run has steps left to take
    assert train(f"--resume={run}") == 0
    state = final_state(run)
    assert resumed_at(state) == [6], "resumed, not retrained"
    assert_same_state(final_state(root / "straight"), state)
