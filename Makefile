# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs omnithread and runs `omnithread demo`
#   make test   creates .venv, installs omnithread with its test dependencies and runs the tests
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo test test-all lint bench clean

demo: $(VENV)/.installed
	$(BIN)/omnithread demo

test: lint
	$(BIN)/python -m pytest

# ruff (lint and format), mypy, and the import contracts between the layers (import-linter)
lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

test-all: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m "slow or not slow"

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/ingest.py

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	touch $@

$(VENV)/.installed: $(VENV)/.created pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.created pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

clean:
	rm -rf $(VENV) omnithread-data .pytest_cache
