# Two commands a newcomer needs: `make run` and `make test`. Both bootstrap .venv from a hash-pinned lock:
#   requirements.lock      what the shop runs on (`make run`, `make install`: production installs only this);
#   requirements-dev.lock  the same versions plus the dev extra: pytest, ruff, mypy, playwright, ... (`make test`).
# Each lock has its own stamp in .venv, so a venv made by `make run` gets the tools on `make test`, and either
# lock's change reinstalls on the next command that needs it. Installing the runtime lock into a venv that already
# has the tools leaves them there: `make clean install` for a venv with nothing else.
# The M-Pesa library (mpesa/, its own pyproject.toml) and the shop are installed editable on top, without deps:
# neither is ever looked up on an index.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
PROJECTS := pyproject.toml mpesa/pyproject.toml
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install install-dev run test lint format typecheck bench lock sandbox clean

install: $(RUNTIME_STAMP)

install-dev: $(DEV_STAMP)

# $(1): the lock to install. `pip check` fails when a lock misses a dependency that a project declares. The shop
# before the library: a venv from before the split has `mpesa-sandbox` owned by the old kulipa, whose reinstall
# removes it.
define install_lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes -r $(1)
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(PIP) install --quiet --no-deps --no-build-isolation -e ./mpesa
	$(PIP) check
	touch $@
endef

$(RUNTIME_STAMP): requirements.lock $(PROJECTS)
	$(call install_lock,requirements.lock)

$(DEV_STAMP): requirements-dev.lock $(PROJECTS)
	$(call install_lock,requirements-dev.lock)

run: install
	$(BIN)/python -m kulipa.devserver

sandbox: install
	$(BIN)/mpesa-sandbox serve

test: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

typecheck: install-dev
	$(BIN)/mypy

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python -m benchmarks

# Regenerate the locks after changing dependencies in pyproject.toml or mpesa/pyproject.toml (needs network to
# PyPI). Pins already in a lock are kept; `make lock LOCK_FLAGS=--upgrade` (or `--upgrade-package NAME`) moves
# them. The dev lock is resolved first, with everything; the runtime lock and the library's own lock
# (requirements-mpesa.lock, for .ci/mpesa-wheel) are constrained to it, so a package shared by two locks has the
# same version in both. mpesa-mz comes from ./mpesa ([tool.uv.sources]) and is left out of the locks.
UV_COMPILE = $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 --no-header \
	--no-emit-package mpesa-mz $(LOCK_FLAGS)

# (Not after `install`: its `pip check` fails on the dependency just added, which is not locked yet.)
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(PIP) install --quiet uv
	$(UV_COMPILE) pyproject.toml requirements.in --extra dev -o requirements-dev.lock
	$(UV_COMPILE) pyproject.toml requirements.in -c requirements-dev.lock -o requirements.lock
	$(UV_COMPILE) mpesa/pyproject.toml --extra sandbox -c requirements-dev.lock -o requirements-mpesa.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
