# mailmoat — `make run` starts the gateway locally, `make test` runs everything. `make help` lists the rest.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export MAILMOAT_DATA_DIR ?= ./var
export MAILMOAT_CONFIG ?= config/demo.toml
# pytest workers (pytest-xdist): one per core, at most 4 (each may start its own clamd/rspamd).
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)

.PHONY: help setup run test test-fast lint typecheck template-lint conformance bench bench-peers soak build deploy clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: ## create .venv and install the project (+ system packages when root)
	@scripts/system-deps.sh run
	@scripts/setup.sh

# The demo's DNS: config/demo-zone.json fixes the send-test battery's sender domains (sender.example
# may send from loopback, example.com from nowhere, as in real DNS); every other name is live DNS.
run: export MAILMOAT_DNS_ZONE ?= config/demo-zone.json
run: export MAILMOAT_DNS_ZONE_OVERLAY ?= true
# STARTTLS with a self-signed pair made once into var/tls (an operator sets MAILMOAT_TLS_CERT/_KEY).
run: export MAILMOAT_TLS_SELF_SIGNED ?= true
run: setup ## start the gateway: SMTP 127.0.0.1:2525, portal http://127.0.0.1:8080, data in ./var
	@$(VENV)/bin/mailmoat serve

# The template tools (SAM CLI, checkov: their own venvs, ~1.5 min of pip on a fresh clone) are
# installed in the background while lint and mypy run; template-lint then finds them in place.
test: setup ## lint, mypy --strict, template checks (cfn-lint, sam validate) and the whole test suite
	@scripts/system-deps.sh test
	@log=$$(mktemp); \
	  { scripts/sam-validate.sh --install-only && scripts/checkov.sh --install-only; } >"$$log" 2>&1 & \
	  tools=$$!; \
	  $(MAKE) --no-print-directory lint typecheck; rc=$$?; \
	  wait $$tools; trc=$$?; cat "$$log"; rm -f "$$log"; \
	  [ $$rc -eq 0 ] || exit $$rc; [ $$trc -eq 0 ] || echo "test: template tools install failed (exit $$trc); template-lint retries" >&2
	@$(MAKE) --no-print-directory template-lint
	@$(PY) -m pytest -q -n $(TEST_JOBS)

test-fast: setup ## the test suite without slow tests
	@$(PY) -m pytest -q -n $(TEST_JOBS) -m "not slow"

lint: ## ruff
	@$(VENV)/bin/ruff check layers web functions tests bench

typecheck: ## mypy --strict on the core and the portal
	@$(VENV)/bin/mypy

template-lint: ## cfn-lint, sam validate --lint and checkov on template.yaml (SAM CLI and checkov in .venv-tools, installed once)
	@$(VENV)/bin/cfn-lint template.yaml
	@scripts/sam-validate.sh
	@scripts/checkov.sh

conformance: setup ## RFC 7208 (SPF) test suite through our SPF path
	@$(PY) tests/conformance/spf_rfc7208.py

bench: setup ## benchmark: writes bench/results.json and prints the table
	@$(PY) bench/run.py

bench-peers: setup ## benchmark side by side with rspamd on loopback
	@$(PY) bench/run.py --peers

soak: setup ## long fault-injection run: 1,000 messages through the gateway, 300 with random kill -9
	@MAILMOAT_SOAK=1 $(PY) -m pytest -q -rP -p no:cacheprovider tests/faults

build: ## sam build (zip functions; the scan image needs Docker)
	@scripts/sam-validate.sh --build

deploy: build ## sam deploy --guided
	@PATH="$(CURDIR)/.venv-tools/bin:$$PATH" sam deploy --guided

clean: ## remove the venvs, caches and local data
	rm -rf $(VENV) .venv-tools .pytest_cache .mypy_cache .ruff_cache .aws-sam var
