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
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: demo demo-smoke
demo: infra-up build ## Run the whole platform locally: http://127.0.0.1:8080 (Ctrl-C stops it)
	scripts/demo.sh

demo-smoke: infra-up build ## Run the platform, submit the sample quote, follow it to complete
	scripts/demo.sh --smoke

.PHONY: test
test: lint infra-up browser toxiproxy helm k8s-up build ## Everything: fmt, clippy, unit, integration, end-to-end and browser tests
	scripts/k8s.sh up
	eval "$$($(INFRA) env)" && $(CARGO) test --workspace --locked
	scripts/demo.sh --e2e
	scripts/pii-scan.sh .demo/logs
	scripts/schemathesis.sh
	scripts/pii-scan.sh .demo/logs

.PHONY: toxiproxy
toxiproxy: ## Build toxiproxy-server (the fault-injection tests' TCP proxy) from Go modules, once per machine
	scripts/toxiproxy.sh

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

.PHONY: bench bench-quick bench-profile
bench: ## Full benchmark: writes docs/benchmarks.md and raw data under bench/results/ (about 20 min: 1 005 and 1 214 s measured)
	scripts/bench.sh

bench-quick: ## Quick benchmark for regression checks (under 5 minutes once built)
	scripts/bench.sh --quick

bench-profile: ## CPU profile of the whole stack under a steady load (BENCH_QPS, 120; BENCH_SECONDS, 40): flamegraphs per process
	scripts/bench.sh profile --qps $(or $(BENCH_QPS),120) --seconds $(or $(BENCH_SECONDS),40)

# ---------------------------------------------------------------- Helm chart and images
# helm/osago: the chart. helm is built from Go modules (scripts/helm.sh); chart-tests/ is a Rust
# test crate (lint, template, golden objects, schema, and an install on the test API server of
# scripts/k8s.sh when one runs).

APP_VERSION := $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' helm/osago/Chart.yaml)
IMAGE ?= osago:$(APP_VERSION)

.PHONY: helm chart-sync chart-test images
helm: ## Build helm from Go modules into .tools/bin/ (once per machine, cached in ~/.cache/osago)
	scripts/helm.sh tools

chart-sync: ## Copy the generated CRD, sandbox/sandbox.toml and examples/insurers/ into the chart
	cp crds/insurerintegration.yaml helm/osago/files/crds/insurerintegration.yaml
	cp sandbox/sandbox.toml helm/osago/files/sandbox.toml
	rm -f helm/osago/files/insurers/*.yaml
	cp examples/insurers/*.yaml helm/osago/files/insurers/

chart-test: helm ## Chart tests: lint, template, golden objects, schema; install on the test API server if one runs
	$(CARGO) build --locked -p operator
	$(CARGO) test --locked -p chart-tests

images: ## Build the platform image osago:<appVersion> with Docker (every binary in one image)
	@if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then \
	  echo "make images: no Docker engine is available here (docker info fails), so no image is built." >&2; \
	  echo "  Run it where Docker runs (a laptop, or the kind workflow in .github/workflows/kind.yml)." >&2; \
	  echo "  The chart itself is tested without images: make chart-test." >&2; \
	  exit 1; \
	fi
	docker build --tag $(IMAGE) --build-arg VERSION=$(APP_VERSION) .
	@echo "built $(IMAGE); on kind: kind load docker-image $(IMAGE) --name osago"

# ---------------------------------------------------------------- Kubernetes API server for tests
# kube-apiserver, etcd and kubectl built from Go modules (scripts/k8s.sh, k8s/), cached machine-wide.

.PHONY: tools k8s-up k8s-down k8s-status
tools: ## Build kube-apiserver, etcd and kubectl from Go modules into .tools/bin/ (once per machine, ~15 min)
	scripts/k8s.sh tools
k8s-up: tools ## Start etcd + kube-apiserver on 127.0.0.1:56443; prints `export KUBECONFIG=...` last
	scripts/k8s.sh up
k8s-down: ## Stop the test API server and etcd (state stays in .infra/k8s; scripts/k8s.sh reset wipes it)
	scripts/k8s.sh down
k8s-status: ## Tell whether the test API server runs
	scripts/k8s.sh status

# ---------------------------------------------------------------- hostile input
# fuzz/ is its own Cargo workspace (cargo fuzz, libFuzzer + AddressSanitizer on the stable
# toolchain); scripts/schemathesis.sh runs schemathesis from a venv in ~/.cache/osago.

.PHONY: fuzz api-fuzz
fuzz: ## Fuzz the quote request JSON, the identifiers, the tariff and mapped templates, FUZZ_SECONDS (60) per target
	scripts/fuzz.sh

api-fuzz: infra-up build ## schemathesis against /openapi.json of the local platform: no 5xx, every error problem+json
	scripts/schemathesis.sh
