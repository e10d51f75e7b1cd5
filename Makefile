# Two entry points used by the README quick start and by CI.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench reliability

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Set up and run the service on embedded defaults (SQLite + ./data/media).
run: $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/mms-receiver serve

# Set up and pass the tests: lint, types, then the whole suite.
test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/ruff check receiver tests
	$(BIN)/ruff format --check receiver tests
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(BIN)/python
	$(BIN)/ruff check receiver tests
	$(BIN)/mypy

bench: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/python tests/benchmarks/bench_inbound.py
	$(BIN)/python tests/benchmarks/bench_inbound.py --latency 0 --messages 300 --senders 16
	$(BIN)/python tests/benchmarks/bench_cost.py
	$(BIN)/python tests/benchmarks/bench_media.py
	$(BIN)/python tests/benchmarks/bench_fit.py
	$(BIN)/python tests/benchmarks/bench_list.py
	$(BIN)/python tests/benchmarks/bench_scan.py
	$(BIN)/python tests/benchmarks/bench_playable.py
	$(BIN)/python tests/benchmarks/bench_similar.py
	$(BIN)/python tests/benchmarks/bench_ocr.py
	$(BIN)/python tests/benchmarks/bench_analytics.py
	$(BIN)/python tests/benchmarks/bench_inbox.py
	$(BIN)/python tests/benchmarks/bench_sse.py
	$(BIN)/python tests/benchmarks/bench_events.py

reliability: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/python -m tests.reliability.suite --mode full
