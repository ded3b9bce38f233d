VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: install install-test install-bench run worker test lint bench gpu-check clean

$(VENV)/bin/python:
	@echo "==> creating a virtual environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)

# The first install downloads PyTorch and friends (a few minutes): say so, rather than sit silent.
$(VENV)/.installed: $(VENV)/bin/python pyproject.toml constraints.txt
	@echo "==> installing the service and its dependencies into $(VENV) (PyTorch among them: a few minutes the first time)"
	$(PIP) -e .
	@echo "==> installed"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	@echo "==> installing the test tools into $(VENV)"
	$(PIP) -e '.[test,postgres]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PIP) -e '.[bench]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-bench: $(VENV)/.installed-bench

## Start the API on http://$HOST:$PORT with an embedded Celery worker (SQLite, local artifacts, filesystem broker).
run: install
	@echo "==> starting the API with an embedded worker (python -m service); the dashboard is at / once it listens"
	$(PY) -m service

## Start one Celery worker process (for Redis/PostgreSQL deployments).
worker: install
	$(PY) -m worker

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

## ruff (lint and format check) and import-linter (the layer rules in pyproject.toml).
lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

## Measure the service against baselines run alongside it and print a table of ratios (about 5 minutes;
## BENCH_ARGS=--quick for a smoke run). Measures Redis dispatch too when redis-server is installed.
bench: install-bench
	$(PY) -m bench $(BENCH_ARGS)

## On a machine with CUDA: the gpu-marked tests, then a short CUDA bench (ResNet-20 job vs plain loop in fp32
## and bf16, CUDA predict vs CPU, data-parallel training on every GPU vs one); stopped at 8 minutes. Fails
## without a visible CUDA device.
gpu-check: install-test install-bench
	timeout 480 sh -c '$(PY) -m pytest -m gpu -q tests/test_gpu.py && $(PY) -m bench.gpu'

clean:
	rm -rf $(VENV) data
