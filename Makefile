# IPSP: the two newcomer commands are `make demo` and `make test`; both do their own set-up.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
IPSP := $(BIN)/ipsp
# the demo needs only the package (no torch); tests and benchmarks add the dev and train extras
BASE_STAMP := $(VENV)/.installed-base
DEV_STAMP := $(VENV)/.installed-dev
FRAMES ?= 600
PREREQS := 1_infrastructure/local/prereqs.sh
# labelled frames for `make train` (YOLO format); the default is the hand-labelled camera beside the checkout
DATA ?= ../shared/data/vn-traffic-cam01/data.yaml
# bench-produce and bench-serve reuse tests/support (test-only helpers), as pytest does with pythonpath = ["tests"]

.PHONY: help prereqs-demo prereqs-test setup setup-dev fetch up down status demo test lint unit integration bench \
        k8s-up k8s-down dashboards train bench-pack bench-produce bench-detect bench-fidelity bench-pipeline bench-batch bench-rescale bench-serve bench-soak capacity clean

help: ## list targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

prereqs-demo:
	@PYTHON=$(PYTHON) bash $(PREREQS) demo

prereqs-test:
	@PYTHON=$(PYTHON) bash $(PREREQS) test

$(BASE_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e .
	touch $(BASE_STAMP)

$(DEV_STAMP): $(BASE_STAMP)
	$(BIN)/pip install -q -e ".[dev,train]"
	touch $(DEV_STAMP)

setup: prereqs-demo $(BASE_STAMP) ## create .venv with the package (what the demo needs; no torch)

setup-dev: prereqs-test $(DEV_STAMP) ## add the dev tools and the train extra (ultralytics, torch) for tests

fetch: setup ## fetch and build the local services (Kafka, FerretDB, S3 server, Spark connector)
	$(IPSP) stack fetch

up: fetch ## start the local stack on loopback (idempotent)
	$(IPSP) stack up

down: k8s-down ## stop what `make up` and `make k8s-up` started
	@test -x $(IPSP) && $(IPSP) stack down || true

k8s-up: setup ## Kubernetes API server + etcd on loopback for the manifest tests (built from Go the first time)
	$(IPSP) stack k8s up

k8s-down: ## stop the Kubernetes control plane
	@test -x $(IPSP) && $(IPSP) stack k8s down || true

status: ## show the local stack
	$(IPSP) stack status

demo: prereqs-demo up ## the main job end to end on the local stack (FRAMES=11508 for the full feed)
	$(IPSP) demo --frames $(FRAMES)

lint: setup-dev ## ruff and mypy
	$(BIN)/ruff check src tests benchmarks 1_infrastructure/grafana 2_preprocessing 3_spark_processor 4_model_training
	$(BIN)/ruff format --check src tests benchmarks 1_infrastructure/grafana 2_preprocessing 3_spark_processor 4_model_training
	$(BIN)/mypy

unit: setup-dev ## unit tests (nothing but pytest)
	$(BIN)/pytest tests/unit

integration: setup-dev up k8s-up ## integration tests against the real local stack
	$(BIN)/pytest tests/integration

test: prereqs-test lint up k8s-up ## everything CI runs: lint, unit and integration tests
	$(BIN)/pytest tests

train: setup-dev ## fine-tune the traffic detector on DATA (YOLO data.yaml), register it, ship it as the default
	$(IPSP) train --data $(DATA) --name traffic
	$(IPSP) model promote traffic

bench: bench-detect bench-fidelity bench-pack bench-produce bench-pipeline bench-batch bench-rescale bench-serve ## all benchmarks

bench-detect: setup-dev ## detector frames/s per backend and batch size
	$(BIN)/python benchmarks/bench_detect.py

bench-fidelity: setup-dev ## detector precision/recall/count error vs reference labels on real road footage
	$(BIN)/python benchmarks/bench_fidelity.py

bench-pack: setup-dev up ## pack the synthetic feed vs tar
	$(BIN)/python benchmarks/bench_pack.py

bench-produce: setup-dev up ## producer msg/s and rate accuracy
	PYTHONPATH=tests $(BIN)/python benchmarks/bench_produce.py

bench-pipeline: setup-dev up ## end-to-end efficiency vs the best detector-only run (median of 3), seed-style speed-up, latency
	$(BIN)/python benchmarks/bench_pipeline.py

bench-batch: setup-dev up ## fixed cost per micro-batch: the stream job at 1, 10 and 100 records per batch, by step
	$(BIN)/python benchmarks/bench_batch_cost.py

bench-rescale: setup-dev up ## shard fetches when an executor joins or leaves a running stream (loopback cluster)
	$(BIN)/python benchmarks/bench_rescale.py

capacity: setup ## what 1,000 cameras at 1 frame/s need, from the benchmarks' results (CAMERAS=, FPS=)
	$(IPSP) capacity --cameras $(or $(CAMERAS),1000) --fps $(or $(FPS),1)

bench-soak: setup-dev up ## the stream job 30 min at half load: memory, Kafka lag, latency per minute
	$(BIN)/python benchmarks/bench_soak.py

bench-serve: setup-dev up ## API requests/s and p95 latency
	PYTHONPATH=tests $(BIN)/python benchmarks/bench_serve.py

dashboards: setup-dev ## regenerate the Grafana dashboards' JSON from 1_infrastructure/grafana/dashboards_code.py
	$(BIN)/python 1_infrastructure/grafana/dashboards_code.py --write

clean: down ## remove local state (stack data, caches) and the venv
	rm -rf .local $(VENV)
