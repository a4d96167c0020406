# Meldbot: `make demo` runs the demo, `make test` runs every test. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Every dependency comes from the pinned, hash-checked lock (deploy/lock.sh regenerates it).
LOCK := requirements-test.lock
STAMP := $(VENV)/.installed-lock
export MELDBOT_TEST_POSTGRES_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/postgres

.PHONY: demo chat test bench lock clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# The lock holds every package (the build backend too), each with its hashes: pip installs exactly
# those files and refuses anything else. Meldbot itself is then installed without resolving anything.
$(STAMP): $(LOCK) pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# A private Matrix homeserver, the bot and the reporter's chat in this terminal (see README).
demo: $(STAMP)
	$(BIN)/meldbot demo

# The same conversation without Matrix: the console platform.
chat: $(STAMP)
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
	$(BIN)/python bench/stats.py
	$(BIN)/python bench/scale.py

# Regenerate requirements.lock and requirements-test.lock after a change in pyproject.toml.
lock:
	PYTHON=$(PYTHON) bash deploy/lock.sh

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis test-artifacts
