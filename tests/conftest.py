"""Shared test settings. Ray fails here by hanging, so every Ray test has a hard timeout (pyproject)."""

import os

# Ray Train polls workers every 2 s by default; reports would dominate short test runs.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# OpenMP threads that spin while waiting make small ops ~10x slower on a loaded 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Under pytest-xdist each test process gets its own temp dir (short: Ray keeps unix sockets under it),
# so that tests checking what a run leaves in the temp dir do not see the other process's runs.
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker:
    import atexit
    import shutil
    import tempfile

    _tmp = f"/tmp/u2t-{_worker}-{os.getpid()}"
    os.makedirs(_tmp, exist_ok=True)
    atexit.register(shutil.rmtree, _tmp, ignore_errors=True)
    os.environ["TMPDIR"] = _tmp
    tempfile.tempdir = _tmp

# One SeaweedFS server for the whole session (test modules use the fixtures, they do not import them).
from tests.fixtures_s3 import s3_env, s3_server  # noqa: E402,F401


def pytest_collection_modifyitems(session, config, items):
    """Longest modules first, so that under xdist (`--dist loadfile --no-loadscope-reorder`) the two
    processes finish together instead of one running the end-to-end Ray modules alone at the end.
    A module's expected length is the sum of its tests' explicit `timeout` marks (the Ray tests carry
    one sized to their run), which keeps the order right as tests are added without a timing file."""
    weight: dict[str, float] = {}
    for item in items:
        mark = item.get_closest_marker("timeout")
        seconds = float(mark.args[0]) if mark is not None and mark.args else 0.0
        weight[item.module.__name__] = weight.get(item.module.__name__, 0.0) + seconds
    order = {name: i for i, name in enumerate(dict.fromkeys(item.module.__name__ for item in items))}
    items.sort(key=lambda item: (-weight[item.module.__name__], order[item.module.__name__]))
