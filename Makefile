# Paper-trading backend: one entry point for every routine task.
#
#   make dev            whole system locally (Ctrl-C stops it all)
#   make test           hermetic services + the whole test suite
#   make chaos          the chaos suite: 1000 accounts, 25 min of load under every fault, then
#                       the auditor; writes RELIABILITY.md (CHAOS_ARGS="--seed 7 ...")
#   make soak           30 min of steady mixed load sampled every 10 s (CSV + PNG); RELIABILITY.md
#   make fuzz           hermetic services + only the fuzz tests (test names with `fuzz`),
#                       PROPTEST_CASES=20000 cases each (make test runs them with 256)
#   make migrate        migrate the dev database (ENV=test for the test one)
#   make migrate ENV=none DATABASE_URL=postgres://user:pass@host:5432/trading
#                       migrate any database, e.g. Aurora on AWS, starting nothing
#   make services-up    start local Postgres/Redis/moto (ENV=dev|test)
#   make services-down  stop them
#   make services-status
#   make lint           cfn-lint + sam validate --lint on template.yaml, cargo fmt --check,
#                       clippy -D warnings (also the first step of make test)
#   make package        sam build for arm64 and x86_64 (cargo-lambda), the ingest image
#                       context, GLIBC <= 2.34 check, binary sizes (ARCHS=arm64 for one)
#   make deploy         sam deploy --guided of the arm64 build (DEPLOY.md)
#   make cost           monthly AWS bill of a workload (COST_ARGS="--users 1000 ...")
#   make fmt | bench
#   make clean-local    stop local services and delete .local/ (venv included)
#
# Local services, ports and environment variables: infra/scripts/services.sh.
# CARGO_TARGET_DIR is respected.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

ENV ?= dev
SCRIPTS := infra/scripts

.PHONY: help dev test chaos soak fuzz migrate install services-up services-down services-status \
        lint package deploy cost fmt bench clean-local

help:
	@sed -n '3,23p' Makefile | sed 's/^# \{0,1\}//'

dev:
	@bash $(SCRIPTS)/dev.sh

test:
	@bash $(SCRIPTS)/test.sh

fuzz:
	@bash $(SCRIPTS)/test.sh fuzz

CHAOS_ARGS ?=
chaos:
	@bash $(SCRIPTS)/chaos.sh --report RELIABILITY.md $(CHAOS_ARGS)

SOAK_ARGS ?=
soak:
	@bash $(SCRIPTS)/chaos.sh --soak --report RELIABILITY.md $(SOAK_ARGS)

# ENV=dev|test: start that env's services if needed and migrate its database.
# ENV=none: migrate the database at $$DATABASE_URL (AWS) without starting anything.
migrate:
	@bash $(SCRIPTS)/migrate.sh $(ENV)

install:
	@bash $(SCRIPTS)/services.sh install

services-up: install
	@bash $(SCRIPTS)/services.sh start $(ENV)
	@bash $(SCRIPTS)/services.sh env $(ENV)

services-down:
	@bash $(SCRIPTS)/services.sh stop $(ENV)

services-status:
	@bash $(SCRIPTS)/services.sh status $(ENV)

lint:
	@bash $(SCRIPTS)/lint.sh

package:
	@bash $(SCRIPTS)/package.sh

# Deploys what `make package` built for ARCH (arm64 unless told otherwise).
ARCH ?= arm64
deploy:
	@test -f .aws-sam/build-$(ARCH)/template.yaml || { echo "run make package first" >&2; exit 1; }
	SAM_CLI_TELEMETRY=0 .local/venv/bin/sam deploy --guided \
	    --template-file .aws-sam/build-$(ARCH)/template.yaml \
	    --capabilities CAPABILITY_IAM --parameter-overrides Architecture=$(ARCH)

COST_ARGS ?=
cost:
	@cargo run -q -p cost -- $(COST_ARGS)

fmt:
	cargo fmt --all

bench:
	@if [ -f $(SCRIPTS)/bench.sh ]; then bash $(SCRIPTS)/bench.sh; \
	 else echo "$(SCRIPTS)/bench.sh not written yet" >&2; exit 1; fi

clean-local:
	@bash $(SCRIPTS)/services.sh clean
