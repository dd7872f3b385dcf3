# The two commands a newcomer needs: `make demo` and `make test`. Everything else is listed by `make help`.
PYTHON ?= .venv/bin/python
PYTEST_ARGS ?=
RUNNER ?= DirectRunner

.PHONY: help install up down status demo lint test test-unit test-integration test-chaos test-flink-cluster

help:
	@echo "make install           install everything (idempotent; cached under \$$ENGAGEMENT_HOME)"
	@echo "make demo [RUNNER=flink|flink-cluster] install, start the stack, generate events and watch them arrive (Ctrl-C stops)"
	@echo "make test              install, lint, then unit and integration tests with a coverage report"
	@echo "make lint              ruff (lint + import order) on everything, mypy on the shipped packages"
	@echo "make test-unit         unit tests only (no stack)"
	@echo "make test-chaos        the reduced fault scenario (not in make test)"
	@echo "make test-flink-cluster faults on the Flink session cluster: a TaskManager killed, the JobManager killed, savepoint and resume (not in make test)"
	@echo "make up|down|status    the local stack (python -m launch.stack ...; WITH=flink adds the Flink session cluster)"

install:
	@python3 -m launch.stack.install

up: install
	@$(PYTHON) -m launch.stack up $(if $(WITH),--with $(WITH))

down:
	@$(PYTHON) -m launch.stack down

status:
	@$(PYTHON) -m launch.stack status $(if $(WITH),--with $(WITH))

demo: install
	@$(PYTHON) -m launch.scenarios.demo --runner=$(RUNNER)

# Coverage of the shipped packages over the whole test run (unit tests and the integration tests that run
# pipelines in this process); the pipelines the end-to-end tests start as subprocesses are not measured.
COVERAGE_FLOOR ?= 90

lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy schemas transforms connectors pipelines

test: lint
	$(PYTHON) -m pytest tests -m "not chaos and not flink_cluster_faults" --cov --cov-report=term --cov-fail-under=$(COVERAGE_FLOOR) $(PYTEST_ARGS)

# The reduced fault scenario (~5 min alone, ~13 min in the traced test run); see docs/operations.md#fault-scenario.
test-chaos: install
	$(PYTHON) -m pytest tests/e2e/test_chaos.py -m chaos -s $(PYTEST_ARGS)

# Faults on the Flink session cluster (~5 min alone): docs/runners.md#flink-session-cluster-local.
test-flink-cluster: install
	$(PYTHON) -m pytest tests/e2e/test_flink_cluster.py -m flink_cluster_faults -s $(PYTEST_ARGS)

test-unit: install
	$(PYTHON) -m pytest tests -m "not integration" $(PYTEST_ARGS)

test-integration: install
	$(PYTHON) -m pytest tests -m integration $(PYTEST_ARGS)
