# Tact's developer commands. The two that matter:
#   make run    set up, then start the daemon
#   make test   set up, then lint, type-check and run every test
#
# Setting up needs only python3 (3.11+) and make: uv, pinned below, is installed from PyPI
# into .tools/, and `uv sync --frozen` builds .venv/ from uv.lock. Both steps are skipped
# while their inputs are unchanged.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
UV_STAMP := $(TOOLS)/.uv-$(UV_VERSION)
VENV_STAMP := $(VENV)/.synced-by-make
PG_SERVER := scripts/pg-test-server.sh
CONFIG ?= $(if $(wildcard config.toml),config.toml,config.example.toml)
PYTEST_ARGS ?=

# uv uses the machine's Python, never one it downloads, and always the project's .venv.
# It compiles the installed packages to bytecode: without that, a shell that sets
# PYTHONDONTWRITEBYTECODE makes every `tact` start compile its dependencies again (about 3 s).
export UV_PYTHON_DOWNLOADS := never
export UV_COMPILE_BYTECODE := 1
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
ifeq ($(origin SSL_CERT_FILE),undefined)
ifneq ($(wildcard /etc/ssl/certs/ca-certificates.crt),)
export SSL_CERT_FILE := /etc/ssl/certs/ca-certificates.crt
endif
endif

.PHONY: help run test bootstrap lint typecheck pytest lock pg-start pg-stop clean distclean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

run: bootstrap ## start the daemon with CONFIG (config.toml if present, else config.example.toml)
	$(BIN)/tact run --config $(CONFIG)

# The PostgreSQL tests need TACT_TEST_POSTGRES_DSN; without one, start a throwaway server.
# If that is impossible they skip, or fail under CI=true (see tests/conftest.py).
test: bootstrap lint typecheck ## lint, type-check, then run every test
	@if [ -z "$${TACT_TEST_POSTGRES_DSN:-}" ]; then \
		if dsn="$$($(PG_SERVER) start)"; then \
			export TACT_TEST_POSTGRES_DSN="$$dsn"; \
			echo "make: PostgreSQL tests use $$dsn (make pg-stop stops the server)"; \
		else \
			echo "make: no PostgreSQL test server (pg-test-server.sh exited $$?)," \
				"so the PostgreSQL tests $$([ "$${CI:-}" = true ] && echo fail || echo skip)" >&2; \
		fi; \
	fi; \
	$(MAKE) pytest

bootstrap: $(VENV_STAMP) ## install uv into .tools/ and the locked dependencies into .venv/

$(UV_STAMP):
	@echo "make: installing uv $(UV_VERSION) into $(TOOLS)/"
	rm -rf $(TOOLS)
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	touch $@

$(VENV_STAMP): $(UV_STAMP) pyproject.toml uv.lock
	@echo "make: syncing $(VENV)/ with uv.lock"
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

lint: bootstrap ## ruff (lint and format check) and import-linter's layering contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: bootstrap ## mypy --strict on the packages
	$(BIN)/mypy

# pytest exits with 5 when it collects nothing: that is a failure too, never a pass.
# The tests start `tact` hundreds of times, so Tact's own bytecode is cached whatever the
# shell's PYTHONDONTWRITEBYTECODE says (__pycache__/ is ignored by git).
pytest: bootstrap ## run pytest (PYTEST_ARGS="..." passes options through)
	@status=0; PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; \
	if [ "$$status" -eq 5 ]; then echo "make: pytest collected no tests" >&2; fi; \
	exit "$$status"

lock: $(UV_STAMP) ## re-resolve uv.lock after editing pyproject.toml
	$(UV) lock

pg-start: ## start the throwaway PostgreSQL test server and print its DSN
	@$(PG_SERVER) start

pg-stop: ## stop the throwaway PostgreSQL test server and delete its data
	@$(PG_SERVER) stop

clean: ## delete caches and build output, stop the test server
	-@$(PG_SERVER) stop
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache build dist
	find . -path ./$(VENV) -prune -o -path ./$(TOOLS) -prune -o -type d -name __pycache__ -exec rm -rf {} +

distclean: clean ## clean, and delete .venv/ and .tools/ as well
	rm -rf $(VENV) $(TOOLS)
