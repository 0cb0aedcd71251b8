# syncline: make install | demo | test | lint | bench
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install dev demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[all]"
	touch $@

$(VENV)/.dev-installed: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev-installed

demo: install
	$(BIN)/syncline demo

lint: dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: dev lint
	$(BIN)/pytest -q

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .syncline .syncline-demo .pytest_cache .mypy_cache .ruff_cache
