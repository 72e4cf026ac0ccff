# Two entry points for a fresh clone: `make demo` and `make test`.
# Both create ./.venv with the system python3 and install rankdist into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[fast]'
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.core

demo: $(VENV)/.core
	$(BIN)/rankdist demo

test: $(VENV)/.test
	$(BIN)/python -m pytest

# Lint and check formatting without rewriting anything (`ruff format` rewrites).
lint: $(VENV)/.test
	$(BIN)/ruff check rankdist tests benchmarks
	$(BIN)/ruff format --check rankdist tests benchmarks

# make bench BENCH_ARGS="--cells 10000" runs one size; see benchmarks/README.md.
bench: $(VENV)/.test
	$(BIN)/python benchmarks/bench_suite.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) rankdist-demo
