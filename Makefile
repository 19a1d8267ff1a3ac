# iotsec: `make run` starts the control plane, `make test` runs lint and the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8443

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/iotsec init --exist-ok
	$(BIN)/iotsec serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/issue_bench.py
	$(BIN)/python bench/crl_bench.py
	$(BIN)/python bench/import_bench.py
	$(BIN)/python bench/authz_bench.py
	$(BIN)/python bench/jwt_bench.py
	$(BIN)/python bench/firmware_bench.py
	$(BIN)/python bench/protect_bench.py
	$(BIN)/python bench/netseg_bench.py
	$(BIN)/python bench/scan_bench.py
	$(BIN)/python bench/keys_bench.py
	$(BIN)/python bench/broker_bench.py
	$(BIN)/python bench/emqx_bench.py
	$(BIN)/python bench/audit_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
