# Developer shortcuts. Every target works from a fresh checkout: the venv is
# created and the project installed (pinned by constraints.txt) on first use.
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.rarefit-installed
HOST ?= 127.0.0.1
PORT ?= 8000
# A local development key; set your own in the environment to override it.
RAREFIT_BOOTSTRAP_API_KEY ?= dev-key
export RAREFIT_BOOTSTRAP_API_KEY

.PHONY: install serve test test-fast bench chaos lint

# Reinstall only when the dependency pins change (pip is slow even when satisfied).
$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/rarefit serve --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not integration and not e2e and not chaos"

chaos: $(STAMP)
	$(PY) -m pytest -m chaos

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

# The same checks .ci/run makes before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
