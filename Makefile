# mailward: `make demo` and `make test` set up everything they need on a fresh Debian machine.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The virtualenv is rebuilt when the dependency list changes.
VENV_STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
STATE_DIR := .local/stack
ENV_FILE := .local/demo.env
PYTEST_ARGS ?=
BENCH_SCALE_ARGS ?=

.PHONY: help install system-deps venv controlplane helm gitops-tools flux cert-manager images crds lint test test-unit test-integration \
        demo down status clean bench bench-dns bench-policy bench-tlsrpt bench-compliance bench-fleet bench-scale

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

install: system-deps venv controlplane helm gitops-tools flux cert-manager images ## Debian packages, virtualenv, node, helm and image builds

system-deps: ## Debian packages (BIND, Unbound, Postfix, ...)
	scripts/install-system-deps.sh

venv: $(VENV_STAMP) ## the Python virtualenv with mailward installed (editable)

# Installed into the existing virtualenv (a running demo keeps working), created if missing.
$(VENV_STAMP): pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

controlplane: ## build etcd, kube-apiserver, controller-manager, scheduler, kubelet, kubectl once per machine (cached in ~/.cache/mailward)
	tools/controlplane/build.sh >/dev/null

helm: ## build helm once per machine (cached in ~/.cache/mailward)
	tools/helm/build.sh >/dev/null

gitops-tools: ## build `health` (kstatus, Argo CD's Lua) once per machine (cached in ~/.cache/mailward)
	tools/gitops/build.sh >/dev/null

flux: ## build Flux's source-controller and kustomize-controller and their test image once per machine (cached in ~/.cache/mailward)
	images/flux/build.sh >/dev/null

cert-manager: ## build cert-manager's controller and its image once per machine (cached in ~/.cache/mailward)
	images/cert-manager/build.sh >/dev/null

images: system-deps ## build the pause, mta and mailward images (cached by content in ~/.cache/mailward/images)
	for image in pause mta mailward; do images/build.sh $$image >/dev/null; done

crds: venv ## regenerate crds/, the chart's CRD templates and values.schema.json from the pydantic models
	$(BIN)/mailward crds --output crds
	$(BIN)/mailward crds --chart --output charts/mailward

lint: venv ## ruff, mypy --strict, and CRD drift
	$(BIN)/ruff check operator mailward_localstack tests
	$(BIN)/mypy
	$(BIN)/mailward crds --check --output crds
	$(BIN)/mailward crds --check --chart --output charts/mailward

test-unit: venv ## pure tests, no servers
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: install ## tests against the real control plane and DNS stack
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

test: install lint ## everything CI runs
	$(BIN)/pytest tests $(PYTEST_ARGS)

demo: install ## a single-node cluster on loopback, mailward installed by its chart, the example as pods
	scripts/demo.sh $(STATE_DIR) $(ENV_FILE)

down: ## stop everything `make demo` started
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m mailward_localstack down --state-dir $(STATE_DIR); \
	else echo "nothing to stop (no virtualenv)"; fi

status: venv ## which processes of the demo stack are running
	$(BIN)/python -m mailward_localstack status --state-dir $(STATE_DIR)

bench: bench-dns bench-policy bench-tlsrpt bench-compliance bench-fleet ## all benchmarks (each prints mailward beside a reference)

bench-dns: install ## publish 1,000 domains: UPDATE messages and records/s vs one message per record
	$(BIN)/python -m tests.bench.dns_publish

bench-policy: install ## policy endpoint over HTTPS: req/s and p99 vs nginx, same load generator
	$(BIN)/python -m tests.bench.policy_endpoint

bench-tlsrpt: install ## ingest 10,000 TLS reports: reports/s and peak RSS vs parsedmarc
	$(BIN)/python -m tests.bench.tlsrpt_ingest

bench-compliance: install ## check 100 local domains: domains/min and peak RSS vs checkdmarc
	$(BIN)/python -m tests.bench.compliance

bench-fleet: install ## MailServer with 1,000 domains: render, pod memory, attach time vs 1 domain and a roll
	$(BIN)/python -m tests.bench.fleet

# Not in `bench`: 15 to 50 minutes (10 of them idle). BENCH_SCALE_ARGS='--domains 10000 --budget 7200'
bench-scale: install ## 1,000 MailDomains with DNS on 4 fleets: time to Ready, operator memory, idle writes vs the goals
	$(BIN)/python -m tests.bench.scale $(BENCH_SCALE_ARGS)

clean: down ## remove the virtualenv and the demo state (keeps the control-plane cache)
	rm -rf $(VENV) .local .mypy_cache .ruff_cache .pytest_cache
