# Vyapaar Nexus — conventional targets. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
VYAPAAR := $(VENV)/bin/vyapaar
PYTEST_ARGS ?=

.PHONY: help provision demo demo-cluster up down status test test-unit lint fmt clean clean-cache

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

provision: ## install Debian packages, the virtualenv and the Go-built tools (idempotent, cached)
	@bash hack/provision.sh all

demo: provision ## bring up the whole system on the local stack and run the sample orders
	@$(VYAPAAR) demo

demo-cluster: provision ## the same samples through the Helm chart on a real kubelet node (root, no Docker)
	@$(VYAPAAR) demo --cluster

up: provision ## start the local stack (control plane + infrastructure) without the demo
	@$(VYAPAAR) stack up

down: ## stop the local stack; leaves no processes behind
	@if [ -x $(VYAPAAR) ]; then $(VYAPAAR) stack down; fi

status: ## what the local stack runs
	@$(VYAPAAR) stack status

.PHONY: bench
BENCH_ARGS ?=
bench: ## sweep offered load over the running system (make demo first); report in docs/bench/
	@$(VYAPAAR) bench $(BENCH_ARGS)

test: provision ## run every test against the real local stack
	@$(VENV)/bin/pytest $(PYTEST_ARGS)

test-unit: ## only the tests that need no infrastructure
	@$(VENV)/bin/pytest -m "not cluster and not infra" $(PYTEST_ARGS)

lint: ## ruff and mypy
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy

fmt: ## format the code
	@$(VENV)/bin/ruff check --fix .
	@$(VENV)/bin/ruff format .

clean: down ## remove the local stack's state
	@if [ -L .state/postgres ]; then rm -rf "$$(readlink -f .state/postgres)"; fi
	rm -rf .state

clean-cache: ## remove built tools (the next provision rebuilds them)
	rm -rf $${VYAPAAR_CACHE:-$$HOME/.cache/vyapaar}
