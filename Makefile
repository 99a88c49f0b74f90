# NexMDM developer commands. `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create the virtual environment and install the project with its dev extras

test: $(STAMP)  ## run the whole test suite (PostgreSQL tests skip without a server unless CI=true)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)  ## the whole system end to end on a throwaway SQLite database (under a minute)
	$(BIN)/nexmdm demo

bench: $(STAMP)  ## benchmarks beside their baselines from the same run (needs PostgreSQL and wrk); results in bench/results/
	@command -v wrk >/dev/null 2>&1 || { echo "bench: installing wrk (the HTTP load generator)"; \
	  apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }; }
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lint: $(STAMP)  ## ruff's checks and formatting, mypy --strict on core/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
