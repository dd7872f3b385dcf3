# The two commands a newcomer needs: `make demo` and `make test`. Everything else is listed by `make help`.
PYTHON ?= .venv/bin/python
PYTEST_ARGS ?=
RUNNER ?= DirectRunner

.PHONY: help install up down status demo test test-unit test-integration clean

help:
	@echo "make install           install everything (idempotent; cached under \$$ENGAGEMENT_HOME)"
	@echo "make demo [RUNNER=flink] install, start the stack, generate events and watch them arrive (Ctrl-C stops)"
	@echo "make test              install, then run unit and integration tests"
	@echo "make test-unit         unit tests only (no stack)"
	@echo "make up|down|status    the local stack (python -m launch.stack ...)"

install:
	@python3 -m launch.install

up: install
	@$(PYTHON) -m launch.stack up

down:
	@$(PYTHON) -m launch.stack down

status:
	@$(PYTHON) -m launch.stack status

demo: install
	@$(PYTHON) -m launch.demo --runner=$(RUNNER)

test: install
	$(PYTHON) -m pytest tests $(PYTEST_ARGS)

test-unit: install
	$(PYTHON) -m pytest tests -m "not integration" $(PYTEST_ARGS)

test-integration: install
	$(PYTHON) -m pytest tests -m integration $(PYTEST_ARGS)
