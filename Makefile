# Two commands on a fresh clone: `make datagen` (the main job) and `make test`.
# Extra arguments reach every CLI through ARGS, e.g. make config ARGS="--config default run.name=x".

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ARGS ?=
PYTEST_ARGS ?=
MODULE ?=

.PHONY: setup test test-fast mutation lint format bench gpu-check config preview datagen inspect train pipeline eval clean

setup: $(STAMP)

# Reinstalls only when pyproject.toml changes; torch comes from the local wheel folder via pip (never uv).
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required, found " + sys.version.split()[0])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Every test: the CI command.
test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The unit tests that are not slow (markers in pyproject.toml, kinds in tests/conftest.py): for the edit-test loop.
test-fast: setup
	$(PY) -m pytest -q -m "unit and not slow" $(PYTEST_ARGS)

# Mutation testing, not in CI (tests/mutation.py): each critical module against only its own tests (minutes per module).
# One module: make mutation MODULE=evaluation/metrics.py; after judging survivors: make mutation MODULE=... ARGS=--rescore.
mutation: setup
	$(PY) -m tests.mutation $(MODULE) $(ARGS)

lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(PY) -m policy.bench_control
	$(PY) -m policy.bench
	$(PY) -m policy.bench_learned --sizes 512
	$(PY) -m assets.bench
	$(PY) -m sim.bench $(ARGS)
	$(PY) -m datagen.bench
	$(PY) -m training.bench

# The prepared GPU check (docs/deployment.md), at most 8 minutes on one H100/H200-class GPU: run with that machine's own
# Python and CUDA torch, not the CPU venv (so no `setup`); it installs the other dependencies it lacks. OUT: report folder.
gpu-check:
	$(PYTHON) -m training.gpu_check --install --out $(or $(OUT),gpu_report) $(ARGS)

preview: setup
	$(PY) -m sim.preview $(ARGS)

config: setup
	$(PY) -m configs $(ARGS)

datagen: setup
	$(PY) -m datagen $(ARGS)

train: setup
	$(PY) -m training $(ARGS)

pipeline: setup
	$(PY) -m training.pipeline $(ARGS)

eval: setup
	$(PY) -m evaluation $(ARGS)

inspect: setup
	$(PY) -m datagen.inspect $(or $(ROOT),runs/smoke/data) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
