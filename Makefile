# OpenManager Vibe — `make run` to start the hub, `make test` to run every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck unit bench bench-peers bench-peers-build web clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/openmanager serve $(ARGS)

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# Three workers on the 2-core machines: most tests wait on a hub subprocess, so two workers kept the cores
# about 60 % busy (the suite 7.5 min with three, 10-11 with two, on 2026-12-08); each test file runs whole
# on one worker, so a module's hub is started once. `make unit PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= 3
unit: install
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test: lint typecheck unit

# The dashboard: web/ (TypeScript + uPlot) built into src/openmanager/web/static/ (committed; needs Node.js 20+).
web:
	cd web && npm ci --no-audit --no-fund && npm run build

bench: install
	$(BIN)/python bench/fanout.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache src/*.egg-info

# Side-by-side fan-out benchmark: the hub against a C floor, Node ws and Socket.IO 4.8 (needs gcc and Node.js 20+).
bench-peers-build: bench/peers/floor bench/peers/node_modules/.package-lock.json

bench/peers/floor: bench/peers/floor.c
	$(CC) -O2 -Wall -o $@ $<

bench/peers/node_modules/.package-lock.json: bench/peers/package-lock.json
	cd bench/peers && npm ci --no-audit --no-fund

bench-peers: install bench-peers-build
	$(BIN)/python bench/sidebyside.py $(BENCH_ARGS)
