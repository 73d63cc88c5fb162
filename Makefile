# Mutual: `make run` serves the demo, `make test` runs every suite. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: bench run test install browser unit integration faces e2e postgres-tests lint clean-var

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	MUTUAL_DEV=1 $(VENV)/bin/mutual run

# Debian's Chromium for the Playwright suite (Playwright's own browser download is not used).
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ]; then apt-get update -q && apt-get install -y -q chromium; \
	  else echo "make test: Debian's chromium is missing; run: sudo apt-get install -y chromium" >&2; exit 1; fi; \
	fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: install
	$(PY) -m pytest tests/unit tests/architecture -q

integration: install
	$(PY) -m pytest tests/integration tests/faces -q

# The database suites again on PostgreSQL, when one answers (MUTUAL_TEST_POSTGRES_URL or 127.0.0.1:5432).
postgres-tests: install
	@url=$$($(PY) tests/pg_probe.py); \
	if [ -n "$$url" ]; then \
	  echo "PostgreSQL reachable: running integration and face tests on it"; \
	  MUTUAL_TEST_POSTGRES_URL="$$url" MUTUAL_TEST_DATABASE=postgres $(PY) -m pytest tests/integration tests/faces -q; \
	else echo "PostgreSQL not reachable: skipping the PostgreSQL run"; fi

e2e: install browser
	$(PY) -m pytest e2e -q

test: install browser
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest tests -q
	$(MAKE) --no-print-directory postgres-tests
	$(PY) -m pytest e2e -q

clean-var:
	rm -rf var

# Benchmarks: dataset cached under var/bench/, report in bench/results/latest.md.
bench: install
	$(VENV)/bin/mutual bench
