"""End-to-end training on a real local Ray: two CPU workers, S3 storage, stop and resume."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from train_support import (
    assert_same_state,
    checkpoint_names,
    fetched,
    load_checkpoint,
    local_ray,
    read_json,
    run_folder,
    train,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("synthetic-cache"))


@pytest.fixture(scope="module")
def ray_session(s3_server):
    """One local Ray for the module (its workers see the S3 server's credentials)."""
    with local_ray(s3_server.env()):
        yield


def _staging_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("u2pl-tb-*")}


@pytest.mark.s3
@pytest.mark.timeout(420)
def test_two_workers_train_u2pl_with_identical_banks_on_s3(ray_session, s3_env, cache_dir):
    s3_server = s3_env
    s3_server.make_bucket("runs")
    storage = s3_server.uri("runs", "train")
    staging_before = _staging_folders()
    rc = train(
        f"--set=storage.path={storage}",
        "--set=storage.name=two",
        "--set=method.sup_only_epochs=0",
        f"--set=data.cache_dir={cache_dir}",
        "--set=eval.images_every=1",
    )
    assert rc == 0
    assert _staging_folders() <= staging_before, "the TensorBoard staging folder of an s3:// run is removed"
    fs, run = run_folder(storage, "two")
    summary = read_json(fs, f"{run}/summary.json")
    assert summary["iterations"] == 8
    assert 0.0 <= summary["best_miou"] <= 1.0 and summary["teacher"]["last_miou"] is not None
    assert summary["run_dir"].startswith("s3://runs/train/two")
    names = checkpoint_names(fs, run)
    assert names == ["checkpoint_00000004", "checkpoint_00000008"]
    with fetched(fs, f"{run}/{names[-1]}") as directory:
        ckpt = load_checkpoint(directory)
    digests = {ckpt["rank_0"]["shared_sha256"], ckpt["rank_1"]["shared_sha256"]}
    assert len(digests) == 1 and None not in digests, "both ranks hold the same memory bank"
    bank = ckpt["state"]["method"]["memory_bank"]
    assert sum(bank["counts"]) > 0, "the all-gathered negatives reached the bank"
    # the artefacts of a run stored in S3
    assert read_json(fs, f"{run}/best.json")["checkpoint"].startswith("best_")
    for artefact in ("config.yaml", "plots/curves.png", "images/val_00000004.png"):
        assert fs.get_file_info(f"{run}/{artefact}").is_file, artefact
    assert any(
        i.is_file
        for i in fs.get_file_info(__import__("pyarrow.fs").fs.FileSelector(f"{run}/tensorboard", recursive=True))
    )


@pytest.mark.timeout(420)
def test_supervised_on_two_workers_validates_every_epoch_with_periodic_checkpoints(
    ray_session, tmp_path, cache_dir, capsys
):
    """Supervised mode on two DDP workers (it crashed at iteration 1: the representation head had no
    loss); periodic checkpoints at every 2nd iteration, some on epoch ends (whose validations were
    skipped, and whose reports carried no iteration)."""
    rc = train(
        f"--set=storage.path={tmp_path}",
        "--set=storage.name=sup",
        f"--set=data.cache_dir={cache_dir}",
        "--set=method.name=supervised",
        "--set=storage.checkpoint_every_iters=2",
    )
    out = capsys.readouterr().out
    assert rc == 0
    run = tmp_path / "sup"
    summary = json.loads((run / "summary.json").read_text())
    assert [h["iteration"] for h in summary["history"]] == [4, 8], "one validation per epoch"
    assert summary["best_miou"] is not None and summary["teacher"]["last_miou"] is None
    assert "it 0/1 " not in out
    names = checkpoint_names(_local(), str(run))
    assert names == ["checkpoint_00000006", "checkpoint_00000008"]  # keep_checkpoints: 2
    for name in names:
        meta = json.loads((run / name / "meta.json").read_text())
        assert {"state.pt", "rank_0.pt", "rank_1.pt", "config.yaml"} <= set(meta["files"]), "one seal for both ranks"
        assert meta["world_size"] == 2
        assert meta["metrics"]["iteration"] == meta["iteration"] and meta["metrics"]["max_iters"] == 8
        ckpt = load_checkpoint(run / name)
        assert ckpt["rank_0"]["teacher_sha256"] == ckpt["rank_1"]["teacher_sha256"]
    # validated on every rank with rank 0's BatchNorm statistics: the student that is saved
    final = load_checkpoint(run / "checkpoint_00000008")
    assert final["rank_0"]["student_buffers_sha256"] == final["rank_1"]["student_buffers_sha256"]


def _local():
    import pyarrow.fs as pafs

    return pafs.LocalFileSystem()


@pytest.mark.timeout(600)
def test_stop_and_resume_reproduces_an_uninterrupted_run(ray_session, tmp_path, cache_dir):
    # Validations on every epoch's last batch (eval.every_iters = iters_per_epoch), periodic checkpoints.
    common = [
        f"--set=storage.path={tmp_path}",
        f"--set=data.cache_dir={cache_dir}",
        "--set=data.deterministic=true",
        "--set=storage.checkpoint_every_iters=3",
        "--set=eval.every_epochs=1",
        "--set=eval.every_iters=4",
        "--set=method.sup_only_epochs=1",
    ]
    assert train(*common, "--set=storage.name=straight") == 0
    # the same run, failing at iteration 5 (after the validation checkpoint of iteration 4, an epoch's end)...
    assert train(*common, "--set=storage.name=broken", "--set=fault.fail_at_iter=5") == 1
    fs, broken = run_folder(str(tmp_path), "broken")
    assert checkpoint_names(fs, broken)[-1] == "checkpoint_00000004"
    # ...then resumed without the fault: no second validation of iteration 4
    assert train(f"--resume={broken}", "--set=fault.fail_at_iter=null") == 0
    fs, straight = run_folder(str(tmp_path), "straight")
    histories = [
        [h["iteration"] for h in read_json(fs, f"{run}/summary.json")["history"]] for run in (straight, broken)
    ]
    assert histories == [[4, 8], [4, 8]]
    for name in checkpoint_names(fs, straight):
        # the seal lands after both ranks' files (file times tick coarsely, so ties are allowed)
        stamps = {p.name: p.stat().st_mtime_ns for p in (Path(straight) / name).iterdir()}
        assert {"state.pt", "rank_0.pt", "rank_1.pt", "meta.json"} <= set(stamps), name
        assert stamps["meta.json"] == max(stamps.values()), (name, stamps)
    with fetched(fs, f"{straight}/checkpoint_00000008") as a, fetched(fs, f"{broken}/checkpoint_00000008") as b:
        assert_same_state(load_checkpoint(a), load_checkpoint(b))


@pytest.mark.timeout(420)
def test_unimatch_trains_on_two_workers_with_two_views_per_unlabelled_image(ray_session, tmp_path, cache_dir):
    """method.name=unimatch through Ray Train and Ray Data: the stream's second weak view decoded in Ray
    tasks (data.decode: ray), no teacher, the method's generators saved per rank (its exact resume is
    tested in one process, tests/test_engine_runner.py)."""
    rc = train(
        f"--set=storage.path={tmp_path}",
        "--set=storage.name=um",
        f"--set=data.cache_dir={cache_dir}",
        "--set=method.name=unimatch",
        "--set=method.conf_thresh=0.5",
        "--set=data.decode=ray",
    )
    assert rc == 0
    summary = json.loads((tmp_path / "um" / "summary.json").read_text())
    assert [h["iteration"] for h in summary["history"]] == [4, 8] and summary["teacher"]["best_miou"] is None
    assert all(0 <= h["reliable_share"] <= 1 for h in summary["history"])  # UniMatch's confident-pixel share
    final = load_checkpoint(tmp_path / "um" / "checkpoint_00000008")
    assert final["state"]["teacher"] == {} and final["rank_0"]["teacher_sha256"] is None
    assert not torch_equal(final["rank_0"]["method"]["generator"], final["rank_1"]["method"]["generator"])


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)
