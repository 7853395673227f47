import json
import random

import numpy as np
import pyarrow.fs as pafs
import pytest
import torch

from u2pl_ray.engine.checkpoint import (
    META,
    CheckpointError,
    capture_rng,
    file_entry,
    load_torch,
    restore_rng,
    save_torch,
    upload_files,
    verify_checkpoint,
    write_meta,
)


def _sealed(tmp_path):
    directory = tmp_path / "checkpoint_00000010"
    directory.mkdir()
    save_torch({"w": torch.arange(4.0)}, directory / "state.pt")
    save_torch({"rng": capture_rng()}, directory / "rank_0.pt")
    write_meta(directory, {"iteration": 10})
    return directory


def test_sealed_checkpoint_verifies_and_lists_its_files(tmp_path):
    directory = _sealed(tmp_path)
    meta = verify_checkpoint(directory)
    assert meta["iteration"] == 10
    assert set(meta["files"]) == {"state.pt", "rank_0.pt"}
    assert not list(directory.glob("*.tmp"))


def test_the_seal_covers_the_files_other_ranks_wrote_elsewhere(tmp_path):
    # rank 1 writes its file in its own folder; both meet in storage, rank 0's seal lists both
    rank1 = tmp_path / "rank1"
    rank1.mkdir()
    save_torch({"rng": capture_rng()}, rank1 / "rank_1.pt")
    directory = tmp_path / "checkpoint_00000010"
    directory.mkdir()
    save_torch({"w": torch.arange(4.0)}, directory / "state.pt")
    save_torch({"rng": capture_rng()}, directory / "rank_0.pt")
    write_meta(directory, {"iteration": 10}, other_files={"rank_1.pt": file_entry(rank1 / "rank_1.pt")})
    assert set(json.loads((directory / META).read_text())["files"]) == {"state.pt", "rank_0.pt", "rank_1.pt"}
    with pytest.raises(CheckpointError, match="rank_1.pt is missing"):
        verify_checkpoint(directory)  # rank 1's upload never landed: not a usable checkpoint
    (rank1 / "rank_1.pt").rename(directory / "rank_1.pt")
    assert verify_checkpoint(directory)["iteration"] == 10


def _upload_then_seal(source, fs, dest, fetch):
    """Uploads without the seal, checks the copy is refused, seals, checks it verifies."""
    upload_files(source, fs, dest, meta=False)
    assert "meta.json" not in {i.base_name for i in fs.get_file_info(pafs.FileSelector(dest))}
    with pytest.raises(CheckpointError, match="meta.json is missing"):
        verify_checkpoint(fetch())
    upload_files(source, fs, dest, meta=True)
    assert verify_checkpoint(fetch())["iteration"] == 10


def test_upload_writes_the_seal_only_when_asked(tmp_path):
    source = _sealed(tmp_path)
    dest = tmp_path / "storage" / "run" / source.name
    _upload_then_seal(source, pafs.LocalFileSystem(), str(dest), lambda: dest)


@pytest.mark.s3
@pytest.mark.timeout(60)
def test_upload_to_s3_writes_the_seal_only_when_asked(s3_env, tmp_path):
    source = _sealed(tmp_path)
    fs = s3_env.filesystem()
    dest = f"{s3_env.make_bucket('upload-seal')}/run/{source.name}"

    def fetch():
        local = tmp_path / f"fetched{len(list(tmp_path.glob('fetched*')))}"
        local.mkdir()
        pafs.copy_files(dest, str(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        return local

    _upload_then_seal(source, fs, dest, fetch)


def test_missing_meta_means_an_interrupted_write(tmp_path):
    directory = _sealed(tmp_path)
    (directory / META).unlink()
    with pytest.raises(CheckpointError, match="meta.json is missing"):
        verify_checkpoint(directory)


def test_damaged_or_missing_file_is_refused(tmp_path):
    directory = _sealed(tmp_path)
    data = (directory / "state.pt").read_bytes()
    (directory / "state.pt").write_bytes(data[:-10] + b"0123456789")
    with pytest.raises(CheckpointError, match="state.pt is damaged"):
        verify_checkpoint(directory)
    (directory / "state.pt").unlink()
    with pytest.raises(CheckpointError, match="state.pt is missing"):
        verify_checkpoint(directory)


def test_foreign_directory_and_foreign_file(tmp_path):
    directory = _sealed(tmp_path)
    meta = json.loads((directory / META).read_text())
    meta["format"] = "something-else"
    (directory / META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a u2pl-ray checkpoint"):
        verify_checkpoint(directory)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="cannot load .*junk.pt"):
        load_torch(junk)


class Payload:
    """Any class: weights_only loading must refuse to build it."""


def test_pickled_objects_are_not_loaded(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, path)
    with pytest.raises(CheckpointError, match="cannot load"):
        load_torch(path)


def test_rng_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_torch(capture_rng(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng(load_torch(tmp_path / "rng.pt"))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_resume_tries_the_newest_sealed_checkpoint_even_when_rays_list_lags(tmp_path):
    from ray.train import Checkpoint

    from u2pl_ray.engine.ray_session import resume_candidates

    local = pafs.LocalFileSystem()
    run = tmp_path / "run"
    for it in (3, 4, 6):
        (run / f"checkpoint_{it:08d}").mkdir(parents=True)
    (run / "best_00000004").mkdir()
    # Ray's list knows iteration 3 or 4 as its latest; the folder holds 6 sealed: 6 first, then older ones
    for known in (3, 4):
        latest = Checkpoint(str(run / f"checkpoint_{known:08d}"), filesystem=local)
        names = [c.path.rsplit("/", 1)[-1] for c in resume_candidates(latest, local, str(run))]
        assert names == ["checkpoint_00000006", "checkpoint_00000004", "checkpoint_00000003"]
    # without a run folder, Ray's latest and its siblings; with neither, nothing
    names = [c.path.rsplit("/", 1)[-1] for c in resume_candidates(latest, None, None)]
    assert names[0] == "checkpoint_00000006" and len(names) == 3
    assert resume_candidates(None, local, str(tmp_path / "empty")) == []
