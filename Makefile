# `make run` and `make test` work on a fresh machine with Python 3.11+, PostgreSQL and Redis.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < requirements.txt | cut -d' ' -f1)

.PHONY: install migrate run demo test lint format clean test-reliability bench bench-smoke bench-dashboard

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/flask --app web migrate

# Before the processes start: an admin key in .data/admin.key (0600, git-ignored) if none exists yet.
run: migrate
	$(BIN)/flask --app web keys bootstrap-admin --file .data/admin.key
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/honcho start --procfile Procfile --port $${PORT:-8000} web worker scheduler

# `make run` plus a simulated fleet (DEMO_VEHICLES, default 200): a day backfilled, then live readings.
# It prints the dashboard's address and the key to sign in with; Ctrl-C stops everything (docs/dashboard.md).
demo: migrate
	$(BIN)/python -m simulator.demo

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/pytest

# Faults, replays and hostile input against private PostgreSQL/Redis servers (about 7 minutes).
test-reliability: install
	RELIABILITY_SUITE=1 $(BIN)/pytest tests/reliability

# The benchmark against this machine's floors (bench/README.md): its own database and Redis db 13,
# the Procfile's processes; 7 to 12 minutes. The table and JSON land in bench-results/.
bench: install
	$(BIN)/python -m bench.run --size full

# The same phases at a tiny size (about 2 minutes), so the benchmark never rots.
bench-smoke: install
	$(BIN)/python -m bench.run --size smoke

# The dashboard in headless Chromium with 10,000 simulated vehicles (docs/dashboard.md); about 5 minutes.
bench-dashboard: install
	$(BIN)/python -m bench.dashboard

format: install
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
