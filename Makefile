# The two quick-start commands: `make serve` and `make test`. Both set themselves up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test lint typecheck pytest schema system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.serve-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[embedded]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.serve-installed

# GraphiQL's pinned assets, fetched with npm and integrity-checked (without npm, GraphiQL uses the CDN).
$(VENV)/.assets: | $(VENV)/.serve-installed
	$(BIN)/modelhub fetch-assets && touch $@ || echo "GraphiQL's assets were not fetched: it will use the CDN"

serve: $(VENV)/.serve-installed $(VENV)/.assets
	$(BIN)/modelhub serve

system-deps:
	bash scripts/system-deps.sh

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check graphql_api tests bench
	$(BIN)/ruff format --check graphql_api tests bench

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

pytest: $(VENV)/.dev-installed $(VENV)/.assets system-deps
	$(BIN)/pytest -q

test: lint typecheck pytest

schema: $(VENV)/.dev-installed
	$(BIN)/modelhub export-schema

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
