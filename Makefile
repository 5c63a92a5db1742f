# `make run` and `make test` work on a fresh machine with only Python 3.11+: without DATABASE_URL/REDIS_URL and
# with nothing answering at 127.0.0.1:5432/6379, embedded PostgreSQL and Valkey start under .data/.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# One stamp per requirements file set, so that a changed pin reinstalls.
stamp = $(VENV)/.installed-$(1)-$(shell cat $(2) | cksum | cut -d' ' -f1)
RUN_STAMP := $(call stamp,run,requirements.txt requirements-local.txt)
DEV_STAMP := $(call stamp,dev,requirements.txt requirements-local.txt requirements-dev.txt)
BENCH_STAMP := $(call stamp,bench,requirements.txt requirements-local.txt requirements-bench.txt)

.PHONY: install install-dev install-bench migrate run demo shell stop-servers test lint format clean test-reliability \
	bench bench-smoke bench-dashboard

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUN_STAMP): requirements.txt requirements-local.txt | $(VENV)/bin/python
	$(BIN)/pip install --quiet -r requirements-local.txt
	rm -f $(VENV)/.installed-run-*
	touch $@

$(DEV_STAMP): requirements.txt requirements-local.txt requirements-dev.txt | $(VENV)/bin/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-dev-*
	touch $@

$(BENCH_STAMP): requirements.txt requirements-local.txt requirements-bench.txt | $(VENV)/bin/python
	$(BIN)/pip install --quiet -r requirements-bench.txt
	rm -f $(VENV)/.installed-bench-*
	touch $@

# `make install` prepares everything `make run`, `make test` and `make bench` need (so it can run before going offline).
install: $(RUN_STAMP) $(DEV_STAMP) $(BENCH_STAMP)
install-dev: $(DEV_STAMP)
install-bench: $(BENCH_STAMP)

migrate: $(RUN_STAMP)
	$(BIN)/python -m common.embedded_servers start >/dev/null
	. .data/run.env 2>/dev/null; $(BIN)/flask --app web migrate

# Picks the servers, migrates, runs the Procfile's web, worker and scheduler under honcho, prints where things are.
run: $(RUN_STAMP)
	$(BIN)/python -m common.dev_stack web worker rollups scheduler

# A shell with the virtualenv first on PATH and DATABASE_URL/REDIS_URL of the last `make run`.
shell: $(RUN_STAMP)
	@. .data/run.env 2>/dev/null; PATH="$(abspath $(BIN)):$$PATH" $${SHELL:-bash}

# Stops the embedded servers under .data/ (`make run` stops the ones it started when it ends).
stop-servers: $(RUN_STAMP)
	$(BIN)/python -m common.embedded_servers stop

# `make run` plus a simulated fleet (DEMO_VEHICLES, default 200): a day backfilled, then live readings.
# It prints the dashboard's address and the key to sign in with; Ctrl-C stops everything (docs/dashboard.md).
demo: $(RUN_STAMP)
	$(BIN)/python -m simulator.demo

lint: $(DEV_STAMP)
	$(BIN)/ruff check .

test: $(DEV_STAMP) lint
	$(BIN)/pytest

# Faults, replays and hostile input against private PostgreSQL/Redis servers (about 7 minutes).
test-reliability: $(DEV_STAMP)
	RELIABILITY_SUITE=1 $(BIN)/pytest tests/reliability

# The benchmark against this machine's floors (docs/performance.md): its own database and Redis db 13,
# the Procfile's processes; about 30 minutes. The table and JSON land in bench-results/.
bench: $(BENCH_STAMP) $(DEV_STAMP)
	$(BIN)/python -m bench.run --size full

# The same phases at a tiny size (about 2 minutes), so the benchmark never rots.
bench-smoke: $(BENCH_STAMP) $(DEV_STAMP)
	$(BIN)/python -m bench.run --size smoke

# The dashboard in headless Chromium with 10,000 simulated vehicles (docs/dashboard.md); about 5 minutes.
bench-dashboard: $(BENCH_STAMP) $(DEV_STAMP)
	$(BIN)/python -m bench.dashboard

format: $(DEV_STAMP)
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
