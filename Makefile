# The README's set-up commands: `make demo` (a simulated call through a local bridge, offline),
# `make test` (the suite) and `make run` (the bridge for real). Each creates .venv and
# installs what it needs on a fresh machine; all are idempotent.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(BIN)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(BIN)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# Starts the bridge (Procfile web line, relay engine unless OPENAI_API_KEY is set) on a free
# port, places one simulated call with demo/audio, stops it; prints the output folder.
demo: $(BIN)/.installed
	$(BIN)/python -m bridge.sim.demo

# Runs the Procfile's web line with the venv on PATH; settings come from the environment
# or a .env file (see the README's settings table).
run: $(BIN)/.installed
	PATH="$(abspath $(BIN)):$$PATH" sh -c "$$(sed -n 's/^web: //p' Procfile)"

# Most tests wait on real-time audio, not the CPU: four workers (each test module whole in one,
# so its bridge is started once) take a third of the time on two cores.
test: $(BIN)/.installed-dev
	$(BIN)/python -m pytest -q -n 4 --dist loadfile

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(BIN)/.installed-dev
	$(BIN)/python bench/transcode.py
	$(BIN)/python bench/engines.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
