# The two set-up commands of the README. Each creates the virtualenv when needed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The demo needs only what the product runs on; the tests add their tools (the broker, the
# browser driver, the type checker) on top, so a fresh clone's `make demo` installs less.
# --no-compile: bytecode is written on first import for the modules used, not for all of
# scipy and matplotlib up front (about 20 s of a fresh install here).
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

$(RUN_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-compile -e .
	@touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet --no-compile -e '.[test,dev]'
	@touch $(STAMP)

DEMO_DIR := fieldstream-data/demo

# The demo starts from an empty directory of its own each time (a second run would otherwise
# ingest the same simulated day again). It serves the live map until Ctrl-C or the day's end;
# DEMO_ARGS adds options, e.g. make demo DEMO_ARGS="--duration 60 --port 0".
DEMO_ARGS ?=
demo: $(RUN_STAMP)
	rm -rf $(DEMO_DIR)
	$(BIN)/fieldstream demo --data-dir $(DEMO_DIR) --clock 30x --technicians 50 $(DEMO_ARGS)

test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) fieldstream-data .mypy_cache .ruff_cache .pytest_cache
