# IPSP: the two newcomer commands are `make demo` and `make test`; both do their own set-up.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
IPSP := $(BIN)/ipsp
STAMP := $(VENV)/.installed
FRAMES ?= 600
EXTRAS ?= dev,train

.PHONY: help setup fetch up down status demo test lint unit integration bench \
        bench-pack bench-produce bench-detect bench-pipeline bench-serve bench-soak clean

help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11+"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP) ## create .venv with the package, dev tools and the train extra

fetch: setup ## fetch and build the local services (Kafka, FerretDB, S3 server, Spark connector)
	$(IPSP) stack fetch

up: fetch ## start the local stack on loopback (idempotent)
	$(IPSP) stack up

down: ## stop what `make up` started
	@test -x $(IPSP) && $(IPSP) stack down || true

status: ## show the local stack
	$(IPSP) stack status

demo: up ## the main job end to end on the local stack (FRAMES=11508 for the full feed)
	$(IPSP) demo --frames $(FRAMES)

lint: setup ## ruff and mypy
	$(BIN)/ruff check src tests benchmarks 2_preprocessing 3_spark_processor 4_model_training
	$(BIN)/ruff format --check src tests benchmarks 2_preprocessing 3_spark_processor 4_model_training
	$(BIN)/mypy

unit: setup ## unit tests (nothing but pytest)
	$(BIN)/pytest tests/unit

integration: up ## integration tests against the real local stack
	$(BIN)/pytest tests/integration

test: lint up ## everything CI runs: lint, unit and integration tests
	$(BIN)/pytest tests

bench: bench-detect bench-pack bench-produce bench-pipeline bench-serve ## all benchmarks

bench-detect: setup ## detector frames/s per backend and batch size
	$(BIN)/python benchmarks/bench_detect.py

bench-pack: up ## pack the synthetic feed vs tar
	$(BIN)/python benchmarks/bench_pack.py

bench-produce: up ## producer msg/s and rate accuracy
	$(BIN)/python benchmarks/bench_produce.py

bench-pipeline: up ## end-to-end efficiency vs the best detector-only run (median of 3), seed-style speed-up, latency
	$(BIN)/python benchmarks/bench_pipeline.py

bench-soak: up ## the stream job 30 min at half load: memory, Kafka lag, latency per minute
	$(BIN)/python benchmarks/bench_soak.py

bench-serve: up ## API requests/s and p95 latency
	$(BIN)/python benchmarks/bench_serve.py

clean: down ## remove local state (stack data, caches) and the venv
	rm -rf .local $(VENV)
