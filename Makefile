# syncline: make install | demo | test | test-fast | lint | bench | lock
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install dev demo test test-fast lint bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Dependencies come from the lock files (make lock), so a fresh machine gets what CI had.
$(VENV)/.installed: pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml requirements-dev.lock $(VENV)/.installed
	$(BIN)/pip install -q -r requirements-dev.lock
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev-installed

demo: install
	$(BIN)/syncline demo

lint: dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# every test; under CI=true a skipped test fails
test: dev lint
	$(BIN)/pytest -q

# the inner loop: unit tests and the integration tests not marked slow
test-fast: dev
	$(BIN)/pytest -q -x -m "not slow"

bench: install
	$(BIN)/python bench/run.py

# re-resolve the lock files from pyproject.toml (needs PyPI)
lock: $(BIN)/python
	$(BIN)/pip install -q uv
	$(BIN)/uv pip compile -q pyproject.toml --extra all --python-version 3.11 -o requirements.lock
	$(BIN)/uv pip compile -q pyproject.toml --extra all --extra dev --python-version 3.11 -o requirements-dev.lock

clean:
	rm -rf $(VENV) .syncline .syncline-demo .pytest_cache .mypy_cache .ruff_cache
