# The two quick-start commands: `make serve` and `make test`. Both set themselves up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test check lint typecheck pytest schema system-deps lock docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Exact versions with hashes (requirements/*.txt, from `make lock`), then modelhub itself without resolving
# anything more: a fresh machine gets what the tests ran on.
$(VENV)/.serve-installed: pyproject.toml requirements/embedded.txt | $(BIN)/python
	$(BIN)/pip install -q --require-hashes -r requirements/embedded.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml requirements/dev.txt | $(BIN)/python
	$(BIN)/pip install -q --require-hashes -r requirements/dev.txt
	$(BIN)/pip install -q --no-deps -e .
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

# Every tier, spread over the cores by test file like `make check` (each worker has its own SecantusDB, ports
# and temporary directories).
pytest: $(VENV)/.dev-installed $(VENV)/.assets system-deps
	$(BIN)/pytest -q -n auto --dist loadfile

test: lint typecheck pytest

# The fast tier, for between edits: ruff, mypy and the in-process tests on the local store. Left out (markers in
# pyproject.toml): child processes, browsers, the S3 twins of local-store tests, tools from outside the virtualenv
# and slow tests; --forbid-child-processes fails a test that starts a child without its `process` marker.
# Spread over the cores by test file (pytest-xdist; each worker has its own SecantusDB, ports and temp dirs).
# `make test` (what CI runs) runs everything.
check: lint typecheck
	$(BIN)/pytest -q -n auto --dist loadfile -m "not (slow or process or browser or s3 or external)" \
		--forbid-child-processes

schema: $(VENV)/.dev-installed
	$(BIN)/modelhub export-schema

# The SDK's API reference (docs/api/graphql_api/client.html) from its docstrings, offline (pdoc).
docs: $(VENV)/.dev-installed
	$(BIN)/pdoc graphql_api.client -o docs/api

# After changing a pin in pyproject.toml: re-resolve requirements/*.txt (pip-tools, from PyPI).
lock:
	bash scripts/lock.sh

clean:
	rm -rf $(VENV) docs/api .pytest_cache .mypy_cache .ruff_cache
