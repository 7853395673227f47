# Two commands on a fresh machine: `make train` and `make test`.
# Both create .venv with plain pip when it is missing (torch comes from the local wheel store).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP_QUIET ?= -q

.PHONY: train test test-fast venv bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) --upgrade pip
	$(PY) -m pip install $(PIP_QUIET) "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install $(PIP_QUIET) -e ".[test]"
	@touch $(STAMP)

train: $(STAMP)
	$(PY) -m u2pl_ray.train $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_method.py

clean:
	rm -rf runs .pytest_cache
