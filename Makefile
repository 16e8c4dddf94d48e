PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all setup test test-fast stress run bench lint clean

all: test

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not slow and not stress'

lint: $(STAMP)
	$(BIN)/ruff check csp_mp tests benchmarks examples docs
	$(BIN)/lint-imports
	$(BIN)/mypy csp_mp
	$(BIN)/python docs/gen_api.py --check

run: $(STAMP)
	$(BIN)/python -m csp_mp bench

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
