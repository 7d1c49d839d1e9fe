# OSAGO quote platform. `make demo` runs it locally; `make test` runs every test.
# Everything the targets need is installed by the project's own scripts, idempotently.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# One build cache for every clone on this machine (CI works in a fresh clone).
export CARGO_TARGET_DIR ?= $(HOME)/.cache/osago/target
CARGO ?= cargo
INFRA := scripts/infra.sh

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: demo demo-smoke
demo: infra-up build ## Run the whole platform locally: http://127.0.0.1:8080 (Ctrl-C stops it)
	scripts/demo.sh

demo-smoke: infra-up build ## Run the platform, submit the sample quote, follow it to complete
	scripts/demo.sh --smoke

.PHONY: test
test: lint infra-up browser build ## Everything: fmt, clippy, unit, integration, end-to-end and browser tests
	eval "$$($(INFRA) env)" && $(CARGO) test --workspace --locked
	scripts/demo.sh --e2e
	scripts/pii-scan.sh .demo/logs

.PHONY: browser
browser: ## Install Debian's chromium and the browser tests' npm packages
	scripts/install-browser.sh

.PHONY: lint
lint: ## cargo fmt --check and clippy -D warnings
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

.PHONY: build
build: ## Build every binary
	$(CARGO) build --workspace --locked

.PHONY: infra-up infra-down infra-status
infra-up: ## Install (if needed) and start Postgres and Kafka; returns when both accept connections
	$(INFRA) up
infra-down: ## Stop Postgres and Kafka
	$(INFRA) down
infra-status: ## Tell whether Postgres and Kafka are running
	$(INFRA) status

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: bench bench-quick
bench: ## Full benchmark: writes docs/benchmarks.md and raw data under bench/results/ (about 20 min)
	scripts/bench.sh

bench-quick: ## Quick benchmark for regression checks (under 5 minutes once built)
	scripts/bench.sh --quick
