# Meldbot: `make demo` runs the demo, `make test` runs every test. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
export MELDBOT_TEST_POSTGRES_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/postgres

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/meldbot chat

test: $(STAMP)
	bash .ci/services
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/turns.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis test-artifacts
