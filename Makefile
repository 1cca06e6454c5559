# Set-up and entry points. Every target is idempotent: the virtual environment is (re)built only
# when pyproject.toml or requirements.lock changes, and the Fashion-MNIST package is installed only
# when missing. pyproject.toml has the supported ranges, requirements.lock the exact versions
# installed here (pip constraints; rewrite it with `make lock` after changing versions).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
FASHION_MNIST := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARGS ?=
PYTEST_ARGS ?=
# make test-fast: pytest 93-276 s here (the machine's speed varies by day: README.md); lint adds ~10 s.
FAST_TESTS := tests/workloads tests/test_layering.py tests/test_packaging.py tests/test_security.py \
  tests/test_shared_data.py tests/orchestrator/test_config.py tests/orchestrator/test_progress.py \
  tests/cluster/test_configs.py

.PHONY: setup data test-services ablate test test-fast lint chaos lock clean

setup: $(STAMP) data

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c $(LOCK) -e '.[dev]'
	@touch $@

# The installed environment's versions of the project's dependency closure, as the new lock
# (after `$(PY) -m pip install NAME==VERSION`; the next setup installs through it).
lock:
	$(PY) tools/lock.py

data:
	@test -d $(FASHION_MNIST) || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq dataset-fashion-mnist; }

# The main job on its embedded default: local Ray, local MLflow (sqlite), Fashion-MNIST.
ablate: setup
	$(PY) -m orchestrator.ablate $(ARGS)

# PostgreSQL for the cluster rehearsal test (started by the test itself, on 127.0.0.1) and
# Chromium for the comparison report's browser test (Playwright drives this one, downloads none).
test-services:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql; }
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

# Lint and format checks first (seconds), then the whole suite, over TEST_WORKERS pytest-xdist
# workers (tests/conftest.py keeps tests that share a costly fixture in one worker; TEST_WORKERS=0
# runs it in this process, in the same order).
TEST_WORKERS ?= 2
test: setup test-services lint
	$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder) $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The development lane: pure units and the fastest integration tests (a few minutes; no Ray cluster,
# no training run). `make test` is the one that counts.
test-fast: setup lint
	$(PY) -m pytest $(FAST_TESTS) $(PYTEST_ARGS)

# The fault-injection tests alone (part of `make test` too): about 15 min.
chaos: setup test-services
	$(PY) -m pytest tests/reliability \
	  tests/orchestrator/test_object_storage.py::test_a_run_checkpoints_to_s3_is_killed_and_resumes_from_s3 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
