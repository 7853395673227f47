"""The per-worker loop in one process, without Ray (data.reader: local, FolderSession): train, checkpoint,
fail, resume from the newest checkpoint and end in the state of a run that never stopped, to the bit."""

import pytest
import torch
from train_support import TINY, FolderSession, assert_same_state, load_checkpoint

from u2pl_ray.config import load_config
from u2pl_ray.data.info import load_dataset_info
from u2pl_ray.engine.faults import InjectedFault
from u2pl_ray.engine.launch import epoch_iterations
from u2pl_ray.engine.runner import Runner


def config(cache, method, *extra):
    return load_config(
        TINY,
        [
            f"data.cache_dir={cache}",
            "data.deterministic=true",
            "data.reader=local",
            "scaling.num_workers=1",
            "storage.checkpoint_every_iters=3",
            "eval.every_epochs=1",
            f"method.name={method}",
            "method.conf_thresh=0.5",
            *extra,
        ],
    )


def run(cfg, folder):
    info = load_dataset_info(cfg.data)
    runner = Runner(cfg, FolderSession(folder), info, epoch_iterations(cfg, info, 1))
    return runner.run()


@pytest.mark.parametrize("method", ["u2pl", "unimatch", "supervised"])
def test_a_run_interrupted_after_a_checkpoint_resumes_to_the_same_state(tmp_path, method):
    cache = tmp_path / "cache"
    straight = run(config(cache, method), tmp_path / "straight")
    assert straight.iteration == 8 and [h["iteration"] for h in straight.history] == [4, 8]
    with pytest.raises(InjectedFault):
        run(config(cache, method, "fault.kind=raise", "fault.fail_at_iter=5"), tmp_path / "broken")
    resumed = run(config(cache, method), tmp_path / "broken")  # a new loop: the restart
    assert [r["iteration"] for r in resumed.resumes] == [4]
    assert [h["iteration"] for h in resumed.history] == [4, 8]
    a = load_checkpoint(tmp_path / "straight" / "checkpoint_00000008")
    b = load_checkpoint(tmp_path / "broken" / "checkpoint_00000008")
    assert_same_state(a, b)
    # the method's own state (its generators) and its rank-shared state (U2PL's memory bank) too
    assert a["rank_0"]["method"].keys() == b["rank_0"]["method"].keys()
    for key, value in a["rank_0"]["method"].items():
        assert torch.equal(value, b["rank_0"]["method"][key]), key
    assert a["rank_0"]["shared_sha256"] == b["rank_0"]["shared_sha256"]
    assert (a["rank_0"]["shared_sha256"] is not None) == (method == "u2pl")


def test_the_local_reader_needs_the_deterministic_stream(tmp_path):
    from u2pl_ray.config import ConfigError

    with pytest.raises(ConfigError, match="data.reader='local'.*data.deterministic=true"):
        load_config(TINY, ["data.reader=local"])
