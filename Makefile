# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-churn lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Embedded broker + redis-server, simulated traffic, the engine, a live view.
demo: $(STAMP)
	$(BIN)/omnipulse demo $(DEMO_ARGS)

## The whole test suite against a real broker and redis-server (started by fixtures).
test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

## SPEC §8 in one run: catch-up throughput (1 and 2 workers) against the raw
## consume+parse limit, latency at half of peak, Redis memory per customer.
## Appends the table to BENCHMARKS.md (BENCH_ARGS=--no-append to only print).
bench: $(STAMP)
	$(BIN)/python -m bench.engine_bench $(BENCH_ARGS)

## Churn model vs the seed heuristic: offline on simulated traffic and on CDNOW,
## then CDNOW and 100,000 simulated events through the real engine (the CDNOW file
## ships in the `bench` extra).
bench-churn: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.churn_eval --data sim
	$(BIN)/python -m bench.churn_eval --data cdnow
	mkdir -p .omnipulse
	$(BIN)/python -m bench.churn_data .omnipulse/cdnow.jsonl
	$(BIN)/python -m bench.churn_engine .omnipulse/cdnow.jsonl
	$(BIN)/python -m bench.churn_data .omnipulse/sim100k.jsonl --sim
	$(BIN)/python -m bench.churn_engine .omnipulse/sim100k.jsonl

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .omnipulse
