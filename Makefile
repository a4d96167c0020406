# Meldbot: `make demo` runs the demo, `make test` runs every test. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
export MELDBOT_TEST_POSTGRES_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/postgres

.PHONY: demo chat test bench clean

DEMO_STAMP := $(VENV)/.installed-demo

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $(DEMO_STAMP)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# A private Matrix homeserver, the bot and the reporter's chat in this terminal (see README).
demo: $(DEMO_STAMP)
	$(BIN)/meldbot demo

# The same conversation without Matrix: the console platform.
chat: $(DEMO_STAMP)
	$(BIN)/meldbot chat

test: $(STAMP)
	bash .ci/services
	bash .ci/browser
	bash .ci/pdf
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/turns.py
	$(BIN)/python bench/matrix_latency.py
	$(BIN)/python bench/teams_throughput.py
	$(BIN)/python bench/understanding.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis test-artifacts
