# NexMDM developer commands. `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install tools services test test-quick lint demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create the virtual environment and install the project with its dev extras

# Debian packages the tests use: promtool (in prometheus) checks and unit-tests deploy/prometheus/alerts.yml;
# tmux runs `nexmdm top` in a real terminal; chromium is the browser the console's test drives with Playwright
# (tests/api/test_console_browser.py; Playwright's own browser download is not used). Installed only when missing.
TOOLS := promtool:prometheus tmux:tmux chromium:chromium
tools:  ## install the Debian packages the tests use (promtool, tmux, chromium) when they are missing
	@missing=""; for pair in $(TOOLS); do command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then echo "tools: installing$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }; fi

test: $(STAMP)  ## run the whole test suite (PostgreSQL tests skip without a server unless CI=true)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-quick: $(STAMP)  ## the tests that take seconds, not the slow or reliability ones (make test runs everything, as CI does)
	$(BIN)/python -m pytest -m "not slow and not reliability" $(PYTEST_ARGS)

demo: $(STAMP)  ## the whole system end to end on a throwaway SQLite database (under a minute)
	$(BIN)/nexmdm demo

bench: $(STAMP)  ## benchmarks beside their baselines from the same run (needs PostgreSQL and wrk); results in bench/results/
	@command -v wrk >/dev/null 2>&1 || { echo "bench: installing wrk (the HTTP load generator)"; \
	  apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }; }
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# pg_auto_failover (the failover test's monitor, primary and secondary) and pgBackRest (the point-in-time
# recovery recipe) are for the PostgreSQL version installed; Debian names the extension's package by it.
services:  ## Debian packages the multi-node and failover tests start instances of (pgbouncer, redis-server, pg_auto_failover, pgbackrest); needs root
	@missing=""; pgversion=$$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1); \
	  command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing="$$missing pgbouncer"; \
	  command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	  command -v pg_autoctl >/dev/null 2>&1 || missing="$$missing pg-auto-failover-cli"; \
	  [ -z "$$pgversion" ] || [ -f /usr/lib/postgresql/$$pgversion/lib/pgautofailover.so ] || \
	    missing="$$missing postgresql-$$pgversion-auto-failover"; \
	  command -v pgbackrest >/dev/null 2>&1 || missing="$$missing pgbackrest"; \
	  if [ -n "$$missing" ]; then echo "services: installing$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; }; fi

lint: $(STAMP)  ## ruff's checks and formatting, mypy --strict, the import layers of core (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
