# lmsbridge: the two Quickstart commands are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-test demo run test lint typecheck unit fault bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e '.[fast]'

install-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[fast,test]'

demo: install  ## the whole pipeline against built-in stand-ins (needs a local RabbitMQ)
	$(BIN)/lmsbridge demo

run: install  ## receiver + worker with your settings: LMSBRIDGE_CONFIG=lmsbridge.toml make run
	$(BIN)/lmsbridge run

lint: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install-test
	$(BIN)/mypy

# The tests mostly wait (on processes, timers, RabbitMQ): run one at a time they keep 16 % of two cores
# busy. So most run TEST_PROCESSES at a time (pytest-xdist; 0 = one at a time in this process), then
# the ones marked `serial` (see the marker in pyproject.toml) alone.
TEST_PROCESSES ?= 4
unit: install-test
	$(BIN)/pytest -m "not slow and not serial" -n $(TEST_PROCESSES)
	$(BIN)/pytest -m "not slow and serial"

test: lint typecheck unit  ## what CI runs

FAULT_EVENTS ?= 100000
WORKERS ?= 1
DATABASE ?= sqlite
fault: install-test  ## the full-size fault-injection ledger (long); e.g. make fault WORKERS=3 DATABASE=postgres (or pgbouncer)
	LMSBRIDGE_FAULT_EVENTS=$(FAULT_EVENTS) LMSBRIDGE_FAULT_WORKERS=$(WORKERS) LMSBRIDGE_FAULT_DATABASE=$(DATABASE) \
		$(BIN)/pytest -m slow tests/faults -x -s

bench: install-test  ## every benchmark, each prints a table
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist src/*.egg-info
