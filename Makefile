# The README's set-up commands: `make demo` (a simulated call through a local bridge, offline),
# `make test` (the suite) and `make run` (the bridge for real). Each creates .venv and
# installs what it needs on a fresh machine; all are idempotent.
#
# Installs are reproducible: every Python package comes from a lock holding exact versions and
# hashes (requirements.lock for the bridge; requirements-dev.lock adds the test, lint and lock
# tools), made by `make lock` from the ranges in requirements*.txt. pip installs a lock with
# --require-hashes, so neither a release made after the lock nor a file other than the one
# locked can get in. To add or change a dependency: edit requirements*.txt, `make lock`, commit.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The venv's own pip (ensurepip's, bundled with the interpreter: nothing fetched) installs the
# locks. It needs no upgrade to check hashes, and an unpinned `pip install --upgrade pip`
# would be the one package that could change under us.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --require-hashes

.PHONY: demo run test lint bench clean lock lock-check system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BIN)/.installed: requirements.lock | $(BIN)/python
	$(PIP_INSTALL) -r requirements.lock
	touch $@

$(BIN)/.installed-dev: requirements-dev.lock | $(BIN)/python
	$(PIP_INSTALL) -r requirements-dev.lock
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
# so its bridge is started once) take a third of the time on two cores. The few whose audio
# checks need the CPU to keep real time (marked `realtime`) run after, one at a time.
test: $(BIN)/.installed-dev
	$(BIN)/python -m pytest -n 4 --dist loadfile -m "not realtime"
	$(BIN)/python -m pytest -m realtime

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(BIN)/.installed-dev
	$(BIN)/python bench/transcode.py
	$(BIN)/python bench/engines.py

# Resolves requirements*.txt (the inputs) into the locks. uv rather than pip-tools: `uv pip
# compile --universal` writes one lock valid on every Python from 3.11 and every platform,
# keeping each requirement's marker (audioop-lts only where python_version >= 3.13), where
# pip-compile locks for the one interpreter it runs on (a 3.11 lock would lack audioop-lts).
# A version already locked stays while its range allows it (adding a dependency moves nothing
# else); `make lock UPGRADE=1` takes the newest each range allows. The dev lock is resolved
# first and the runtime lock is held to it: both pin the same version of what they share.
# Needs the package index (PyPI).
LOCK_FLAGS = --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock" $(if $(UPGRADE),--upgrade)
LOCK_DIR ?= .
lock: $(BIN)/.installed-dev
	cd $(LOCK_DIR) && $(abspath $(BIN))/uv pip compile $(LOCK_FLAGS) \
		requirements-dev.txt -o requirements-dev.lock
	cd $(LOCK_DIR) && $(abspath $(BIN))/uv pip compile $(LOCK_FLAGS) \
		-c requirements-dev.lock requirements.txt -o requirements.lock

# CI: fails when requirements*.txt were edited without `make lock` (the locks would not be
# what the ranges say). Locks a copy of the inputs and locks again, then compares.
lock-check: $(BIN)/.installed-dev
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	cp requirements.txt requirements-dev.txt requirements.lock requirements-dev.lock "$$tmp" && \
	$(MAKE) --no-print-directory lock LOCK_DIR="$$tmp" UPGRADE= >/dev/null && \
	if diff -u requirements-dev.lock "$$tmp/requirements-dev.lock" && \
		diff -u requirements.lock "$$tmp/requirements.lock"; then \
		echo "lock-check: requirements*.lock match requirements*.txt"; \
	else \
		echo "lock-check: requirements*.txt changed without make lock: run it, commit the locks"; \
		exit 1; \
	fi

# Debian packages some tests use; CI installs them with this, a test never does. Without them
# those tests skip, saying why. chromium: the live console's browser test (with its
# recommended fonts, so its screenshot looks as it does for a developer); postgresql and
# redis-server: the store's and the cluster's tests against real servers (.ci/run starts them).
# Idempotent: apt-get runs only for what is missing. Needs root (or sudo).
SYSTEM_PACKAGES := chromium
SYSTEM_PACKAGES_NO_RECOMMENDS := postgresql redis-server
# Waits for another apt or dpkg run to finish (unattended upgrades) instead of failing.
APT_GET := apt-get -qq -o DPkg::Lock::Timeout=600
system-deps:
	@missing() { for p in "$$@"; do \
		dpkg-query -W -f='$${db:Status-Status}' "$$p" 2>/dev/null | grep -qx installed \
			|| echo "$$p"; done; }; \
	with=$$(missing $(SYSTEM_PACKAGES)); without=$$(missing $(SYSTEM_PACKAGES_NO_RECOMMENDS)); \
	if [ -z "$$with$$without" ]; then \
		echo "system-deps: $(SYSTEM_PACKAGES) $(SYSTEM_PACKAGES_NO_RECOMMENDS) installed"; \
		exit 0; \
	fi; \
	command -v apt-get >/dev/null || { echo "system-deps: no apt-get; install:" $$with $$without; \
		exit 1; }; \
	sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	apt="$$sudo env DEBIAN_FRONTEND=noninteractive $(APT_GET)"; \
	echo "system-deps: installing" $$with $$without; \
	$$apt update && \
	{ [ -z "$$with" ] || $$apt install -y $$with </dev/null >/dev/null; } && \
	{ [ -z "$$without" ] || $$apt install -y --no-install-recommends $$without </dev/null >/dev/null; }

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
