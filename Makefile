# Two commands on a fresh machine: `make train` and `make test`.
# Both create .venv with plain pip when it is missing (torch comes from the local wheel store).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP_QUIET ?= -q

.PHONY: train test test-fast lint venv bench clean data-packages
# Debian's real data for the synthetic benchmark's objects and the MRI benchmark; installed where
# apt-get can (root), skipped quietly elsewhere (the synthetic set then draws procedural shapes).
DATA_PACKAGES := dataset-fashion-mnist mricron-data

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) --upgrade pip
	$(PY) -m pip install $(PIP_QUIET) "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install $(PIP_QUIET) -e ".[test]"
	@touch $(STAMP)

train: $(STAMP) data-packages
	$(PY) -m u2pl_ray.train $(ARGS)

data-packages:
	@missing=""; for p in $(DATA_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing$$missing (Debian)"; \
	  apt-get install -y -q $$missing >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $$missing >/dev/null 2>&1) || \
	  echo "could not install$$missing: the synthetic set will use procedural shapes"; \
	fi

# Two test processes: much of a Ray test is waiting (start-up, health checks, S3 server stops), so two
# overlap well even on 2 cores. A module's tests stay in one process (module-scoped clusters, ordering).
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test-fast: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_method.py

clean:
	rm -rf runs .pytest_cache
