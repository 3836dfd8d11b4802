# Backhaul: `make run` brings the whole system up; `make test` runs every test.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PYTEST_ARGS ?=

.PHONY: help install run token test test-unit test-e2e bench bench-quick reliability lint format schemas kafka-fetch kafka-start kafka-stop clean

help:
	@echo "make run      install what is missing, start Kafka, the mail sink and the five services"
	@echo "make test     install what is missing and run every test against real components"
	@echo "make bench    the fan-out benchmark (BENCH_ARGS='--accounts 10000'); see docs/benchmarks.md"
	@echo "make bench-quick  the fan-out at N = 1,000 on SQLite (a few minutes): CPU per disconnect, monolith fraction"
	@echo "make reliability  fault tests under a storm (RELIABILITY_N=2000); writes docs/reliability.md"
	@echo "make lint     ruff, ruff format --check, mypy, and the event-schema check"
	@echo "make token    print a development bearer token (every API call needs one)"
	@echo "make schemas  re-export the events' JSON Schemas (refuses incompatible changes)"
	@echo "make kafka-start / kafka-stop   the embedded Kafka broker alone, on 127.0.0.1:19092"

install:
	@tools/install.sh run

run:
	@tools/install.sh run
	@$(UV) run --no-sync backhaul-dev run

test:
	@tools/install.sh test
	@$(UV) run --no-sync pytest $(PYTEST_ARGS)

test-unit:
	@$(UV) run --no-sync pytest -m "not integration and not e2e" $(PYTEST_ARGS)

test-e2e:
	@tools/install.sh test
	@$(UV) run --no-sync pytest tests/e2e $(PYTEST_ARGS)

bench:
	@tools/install.sh test
	@$(UV) run --no-sync python -m bench.fanout $(BENCH_ARGS)

bench-quick:
	@tools/install.sh test
	@$(UV) run --no-sync python -m bench.fanout --accounts 1000 --latency-accounts 200 \
		--databases sqlite --profile-seconds 0 --idle-seconds 5 --name quick \
		--out bench/results/quick $(BENCH_ARGS)

reliability:
	@tools/install.sh test
	@RELIABILITY_N=$${RELIABILITY_N:-2000} $(UV) run --no-sync pytest -m reliability tests/reliability $(PYTEST_ARGS)
	@$(UV) run --no-sync python tests/reliability/report.py

lint:
	@tools/install.sh run >/dev/null
	$(UV) run --no-sync ruff check .
	$(UV) run --no-sync ruff format --check .
	$(UV) run --no-sync mypy libs/contracts/src libs/kit/src libs/devstack/src libs/ops/src services/*/src
	$(UV) run --no-sync python -m backhaul_contracts.schemas check
	tools/deploy-check.sh

format:
	$(UV) run --no-sync ruff check --fix .
	$(UV) run --no-sync ruff format .

schemas:
	$(UV) run --no-sync python -m backhaul_contracts.schemas write

token:
	@$(UV) run --no-sync backhaul-dev token

kafka-fetch:
	@tools/install.sh run

kafka-start:
	@$(UV) run --no-sync backhaul-dev kafka start

kafka-stop:
	@$(UV) run --no-sync backhaul-dev kafka stop

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
