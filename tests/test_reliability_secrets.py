"""Credentials stay where they were given: a run on S3 whose secret key sits in the environment, then
every byte it wrote (checkpoints, config dump, summary, TensorBoard events, pictures, Ray's own logs and
the driver's output) is scanned for it. And nothing in the package unpickles: every torch.load is
weights_only=True, no pickle module is used."""

from __future__ import annotations

import ast
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from train_support import REPO, local_ray, run_folder, train


@pytest.mark.ray
@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_planted_secret_appears_in_no_file_or_log_of_the_run(s3_env, tmp_path, capfd):
    server = s3_env
    secret = server.secret_key.encode()
    assert len(secret) >= 16
    server.make_bucket("secrets")
    storage = server.uri("secrets", "runs", endpoint_in_uri=False)  # endpoint and keys from the environment
    with local_ray():  # the workers inherit the credentials from this process's environment
        import ray

        session_dir = Path(ray._private.worker._global_node.get_session_dir_path())
        rc = train(
            f"--set=storage.path={storage}",
            "--set=storage.name=planted",
            "--set=eval.images_every=1",
            f"--set=data.cache_dir={tmp_path}/cache",
            "--set=tensorboard=true",
        )
        assert rc == 0
        logs = [p for p in (session_dir / "logs").rglob("*") if p.is_file()]
    out, err = capfd.readouterr()
    assert b"summary: s3://secrets/runs/planted" in (out + err).encode(), "the capture missed the driver"
    assert secret not in (out + err).encode(), "the driver printed the secret"

    fs, run = run_folder(storage, "planted")
    written = [i.path for i in fs.get_file_info(pafs.FileSelector(run, recursive=True)) if i.is_file]
    names = "\n".join(written)
    for kind in ("state.pt", "config.yaml", "summary.json", "meta.json", "events.out.tfevents", ".png"):
        assert kind in names, f"the scan would miss {kind} files"
    for path in written:
        with fs.open_input_stream(path) as src:
            assert secret not in src.read(), f"the secret key is in {path}"
    assert len(logs) > 5, "Ray's session logs were not found"
    for path in logs:
        assert secret not in path.read_bytes(), f"the secret key is in Ray's log {path}"


def test_every_torch_load_is_weights_only_and_nothing_unpickles():
    loads = 0
    for path in sorted((REPO / "u2pl_ray").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m.split(".")[0] in ("pickle", "cloudpickle", "dill", "joblib") for m in modules), (
                    f"{path}:{node.lineno} imports a pickle module"
                )
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if name == "torch.load":
                loads += 1
                flag = keywords.get("weights_only")
                assert isinstance(flag, ast.Constant) and flag.value is True, (
                    f"{path}:{node.lineno} calls torch.load without weights_only=True"
                )
            if name in ("np.load", "numpy.load"):
                flag = keywords.get("allow_pickle")
                assert not (isinstance(flag, ast.Constant) and flag.value), f"{path}:{node.lineno} allows pickles"
    assert loads >= 2, "the scan found no torch.load at all: it is looking in the wrong place"
