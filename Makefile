# Each target creates or refreshes the local virtual environment first, so on a fresh clone
# `make demo` or `make test` is the only command needed.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.stamp-runtime
DEV_STAMP := $(VENV)/.stamp-dev
export OPENBLAS_NUM_THREADS ?= 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint bench eval venv clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# runtime only: no torch
$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# runtime + training + test tools
$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,train,fast]'
	touch $@ $(RUNTIME_STAMP)

venv: $(DEV_STAMP)

demo: $(RUNTIME_STAMP)
	$(BIN)/python -m rtdub.measure.demo --out out

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy rtdub engines training benchmarks

test: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy rtdub engines training benchmarks
	$(BIN)/python -m pytest -q

bench: $(DEV_STAMP)
	RTDUB_MEDIA=$${RTDUB_MEDIA:-../shared/media} $(BIN)/python -m benchmarks.run --out benchmarks/results

eval: $(DEV_STAMP)
	RTDUB_MEDIA=$${RTDUB_MEDIA:-../shared/media} $(BIN)/python -m training.evaluate --out runs/eval

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
