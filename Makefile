# iotsec: `make run` starts the control plane, `make test` runs lint and the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8443

.PHONY: run test lint bench clean console-assets

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

# The console's browser assets come from the npm registry, pinned by package-lock.json:
# htmx is copied into the package (served at /ui/static/vendor/); axe-core stays in
# node_modules for the accessibility tests.
CONSOLE_VENDOR := src/iotsec/console/static/vendor

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --silent

$(CONSOLE_VENDOR)/htmx.min.js: node_modules/.package-lock.json
	mkdir -p $(CONSOLE_VENDOR)
	cp node_modules/htmx.org/dist/htmx.min.js $@

console-assets: $(CONSOLE_VENDOR)/htmx.min.js

# A fresh machine gets the embedded default (--store-passphrase: a generated CA passphrase
# stored in the home, next to the keys) unless IOTSEC_CA_PASSPHRASE is set.
run: $(VENV)/.installed console-assets
	$(BIN)/iotsec init --exist-ok $(if $(IOTSEC_CA_PASSPHRASE),,--store-passphrase)
	$(BIN)/iotsec serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Independent tests run in parallel: most of their time is spent waiting for the real
# servers and tools they start, so more workers than cores pays.
TEST_WORKERS ?= 3

test: lint console-assets
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

bench: $(VENV)/.installed-dev
	PYTHON=$(BIN)/python sh bench/run_all.sh

clean:
	rm -rf $(VENV) node_modules $(CONSOLE_VENDOR) .pytest_cache .mypy_cache .ruff_cache .hypothesis
