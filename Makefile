# edujobs: `make run` runs the system, `make test` passes the tests. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
THREADS ?= 8
PROCESSES ?= 2

.PHONY: run worker scheduler schemas test test-node test-unit test-conformance test-faults test-slow test-deploy test-prometheus test-cluster lint format bench chaos check clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: migrate the database, check RabbitMQ, declare the queues, then run the workers, the scheduler
## and the HTTP API (with the operators' page) in the foreground; Ctrl-C stops all three
run: $(STAMP)
	@$(BIN)/edujobs check || exit 1
	$(BIN)/edujobs db upgrade
	$(BIN)/edujobs queues declare
	@trap 'kill $$(jobs -p) 2>/dev/null; wait' EXIT; \
	$(BIN)/edujobs scheduler & \
	$(BIN)/edujobs api & \
	$(BIN)/dramatiq actors --processes $(PROCESSES) --threads $(THREADS)

## scheduler: the scheduler alone (enqueues the crontab's and run-time schedules' fires)
scheduler: $(STAMP)
	$(BIN)/edujobs scheduler

## worker: start the workers only (QUEUES="media" for one pool)
worker: $(STAMP)
	@$(BIN)/edujobs check || exit 1
	$(BIN)/dramatiq actors --processes $(PROCESSES) --threads $(THREADS) $(if $(QUEUES),--queues $(QUEUES))

## test: every test (unit, integration on the real services, end to end with worker subprocesses)
test: $(STAMP)
	$(BIN)/pytest -q

## schemas: write the exported JSON Schemas (one per actor, and the whole message) to docs/schemas,
## which tests/unit/test_message_schema.py checks are current and the Node client reads
schemas: $(STAMP)
	$(BIN)/edujobs contracts export docs/schemas

## test-node: the Node.js client's tests (clients/node, `node --test`; RabbitMQ tests on a vhost of their own)
test-node:
	cd clients/node && npm ci --no-audit --no-fund && npm test

test-unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

## test-conformance: Dramatiq's own tests (from the sdist of the installed version, fetched with pip into
## var/conformance/) against edujobs' broker on RabbitMQ; expected differences are listed by name
test-conformance: $(STAMP)
	$(BIN)/python -m tests.conformance -q

## test-faults: the fault tests on real processes (connections closed under running jobs, workers killed
## mid-send, queues that refuse a publish, provider outages; parking waits on RabbitMQ's at-least-once
## dead-lettering, which retries every 3 minutes); not part of `make test`, run by CI after it
test-faults: $(STAMP)
	$(BIN)/pytest -q -m faults

## test-slow: long tests that inject no fault (the benchmarks' smoke runs); not part of `make test`
test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow

## test-deploy: deploy/ checked: hadolint, the Compose schema, each compose service's command run with its
## environment on the local services, the kustomize overlays rendered and validated (not in make test)
test-deploy: $(STAMP)
	$(BIN)/pytest -q -m deploy tests/deploy

## test-prometheus: the real Prometheus (Debian package) scrapes a worker pool and the scheduler with
## deploy/prometheus/alerts.yml: 51 dead letters fire the DLQ alert; every Grafana panel's query returns a series
test-prometheus: $(STAMP)
	$(BIN)/pytest -q -m prometheus tests/prometheus

## test-cluster: a 3-node RabbitMQ cluster on this machine (deploy/rabbitmq's files; the 5672 node untouched):
## workers on quorum queues lose nothing and dead-letter nothing when a node stops mid-drain
test-cluster: $(STAMP)
	$(BIN)/pytest -q -m cluster tests/cluster

## lint: ruff (lint + format check) and mypy --strict
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: side-by-side benchmarks against plain Dramatiq, raw pika and the ffmpeg CLI (tables + var/bench/*.json)
bench: $(STAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.media
	$(BIN)/python -m bench.notifications
	$(BIN)/python -m bench.events
	$(BIN)/python -m bench.jobs_query
	$(BIN)/python -m bench.reports
	$(BIN)/python -m bench.interventions

## chaos: the fault harness: N send_email (default 10,000) drained while workers are SIGKILLed, their
## connections closed, RabbitMQ bounced and Redis stopped (its own RabbitMQ node and Redis; bench/chaos.py)
N ?= 10000
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos --messages $(N)

check: $(STAMP)
	$(BIN)/edujobs check

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
