# finn: two commands.
#   make run   install, create + migrate the database, seed a demo account,
#              start web + worker + beat, print the URLs
#   make test  install dev tools, lint, type-check, run the whole suite
# Both start PostgreSQL and Redis on this machine first if they are down.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PG_HOST ?= 127.0.0.1
PG_PORT ?= 5432
PG_USER ?= postgres
DB_NAME ?= finn
export DATABASE_URL ?= postgres://$(PG_USER)@$(PG_HOST):$(PG_PORT)/$(DB_NAME)
export REDIS_URL ?= redis://127.0.0.1:6379/0
# `make run` turns x402 on for the demo, on Base Sepolia, paying a burn address and
# settling through the public testnet facilitator; set your own treasury to use it.
RUN_X402 := FEATURE_X402=$${FEATURE_X402:-true} \
	X402_PAY_TO=$${X402_PAY_TO:-0x000000000000000000000000000000000000dead} \
	X402_FACILITATOR_URL=$${X402_FACILITATOR_URL-https://x402.org/facilitator}

.PHONY: help run test services browser install install-dev database lint bench load fuzz chaos

help:
	@echo "make run   - start finn (web + worker + beat) with a seeded demo account"
	@echo "make test  - lint, type-check and run the whole test suite"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Start the machine's PostgreSQL and Redis when they are not answering.
services:
	@pg_isready -q -h $(PG_HOST) -p $(PG_PORT) || { \
		echo "starting PostgreSQL"; \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; }
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { \
		echo "starting Redis"; \
		redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no; }
	@for i in $$(seq 1 30); do \
		pg_isready -q -h $(PG_HOST) -p $(PG_PORT) && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && exit 0; \
		sleep 1; done; echo "PostgreSQL or Redis did not come up" >&2; exit 1

var/jwt_es256.pem:
	@mkdir -p var
	@openssl ecparam -name prime256v1 -genkey -noout -out $@
	@chmod 600 $@

var/secret_key:
	@mkdir -p var
	@$(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))' > $@
	@chmod 600 $@

# Two roles (least privilege): finn_owner owns the tables and runs migrations; finn_app is what
# web, worker and beat connect as (it cannot UPDATE or DELETE the journal, postings or audit log).
OWNER_URL := postgres://finn_owner@$(PG_HOST):$(PG_PORT)/$(DB_NAME)
APP_URL := postgres://finn_app@$(PG_HOST):$(PG_PORT)/$(DB_NAME)
database: services install var/secret_key var/jwt_es256.pem
	@for role in finn_owner finn_app; do \
		psql -h $(PG_HOST) -p $(PG_PORT) -U $(PG_USER) -d postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$$role'" | grep -q 1 \
		|| psql -h $(PG_HOST) -p $(PG_PORT) -U $(PG_USER) -d postgres -qc "CREATE ROLE $$role LOGIN"; done
	@psql -h $(PG_HOST) -p $(PG_PORT) -U $(PG_USER) -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$(DB_NAME)'" | grep -q 1 \
		|| createdb -h $(PG_HOST) -p $(PG_PORT) -U $(PG_USER) -O finn_owner $(DB_NAME)
	@# A database made before the roles existed: hand it and its objects to finn_owner.
	@psql -h $(PG_HOST) -p $(PG_PORT) -U $(PG_USER) -d $(DB_NAME) -qtAf deploy/postgres/adopt.sql >/dev/null
	@SECRET_KEY=$$(cat var/secret_key) JWT_SIGNING_KEY_FILE=var/jwt_es256.pem DATABASE_URL=$(OWNER_URL) \
		$(BIN)/python manage.py migrate --noinput

RUN_ENV := SECRET_KEY=$$(cat var/secret_key) JWT_SIGNING_KEY_FILE=$(CURDIR)/var/jwt_es256.pem DATABASE_URL=$(APP_URL) \
	SECURE_SSL_REDIRECT=false
run: database
	@$(RUN_ENV) $(BIN)/python manage.py collectstatic --noinput >/dev/null
	@$(RUN_ENV) $(BIN)/python manage.py seed_demo > var/demo.json
	@echo "demo account: $$(cat var/demo.json)"
	@echo "API:      http://127.0.0.1:8000/api/v1/   (Authorization: Bearer <api_key above>)"
	@echo "API docs: http://127.0.0.1:8000/api/docs/   (ReDoc: http://127.0.0.1:8000/api/redoc/)"
	@echo "health:   http://127.0.0.1:8000/health"
	@echo "metrics:  http://127.0.0.1:8000/metrics"
	@echo "admin:    http://127.0.0.1:8000/admin/   (create a user: .venv/bin/python manage.py createsuperuser)"
	@echo "x402:     POST http://127.0.0.1:8000/api/v1/x402/invoke {\"model\": \"echo\", \"prompt\": \"hi\"} -> 402 (demo model; Base Sepolia)"
	@rm -rf var/prometheus && mkdir -p var/prometheus
	$(RUN_ENV) $(RUN_X402) PROMETHEUS_MULTIPROC_DIR=$(CURDIR)/var/prometheus PATH=$(CURDIR)/$(BIN):$$PATH \
		$(BIN)/honcho start -f Procfile

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

# Tools the suite drives, from Debian's packages when missing: Chromium (browser tests),
# promtool and amtool (alert rules and Alertmanager config), PgBouncer (tests/faults/test_pgbouncer.py).
TOOL_PACKAGES := chromium:chromium promtool:prometheus amtool:prometheus-alertmanager pgbouncer:pgbouncer
browser:
	@missing=""; for pair in $(TOOL_PACKAGES); do \
		command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

# The suite uses its own Redis database (15), so `make test` beside a running
# `make run` neither flushes its keys nor feeds its worker.
test: export REDIS_URL := redis://127.0.0.1:6379/15
# pytest exits non-zero when no test ran (code 5), so an empty run fails here.
test: services browser lint
	$(BIN)/pytest

# Hot-path benchmark against a running `make run` (wrk drives it; pgbench gives the anchor).
bench: install
	@command -v wrk >/dev/null 2>&1 || { echo "installing Debian package: wrk"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Long fuzzing rounds (make test runs short ones): 20,000 examples per parser property, and
# schemathesis over the whole API schema at 2,000 examples per operation (three passes: flags
# on, flags off, a finance staff key). FINN_FUZZ_SEED=N picks another seed.
fuzz: services install-dev
	FINN_FUZZ_PROFILE=long REDIS_URL=redis://127.0.0.1:6379/15 $(BIN)/pytest -q -p no:timeout tests/fuzz

# Seeded chaos (tests/chaos/harness.py): its own PostgreSQL cluster, Redis, fake upstream and finn;
# SCHEDULES schedules of operations and faults from SEED on, then the history and the books are checked.
SCHEDULES ?= 1000
SEED ?= 1
chaos: install-dev
	$(BIN)/python -m tests.chaos.harness --schedules $(SCHEDULES) --seed $(SEED) --quiet-every 100

# The seeds' load scenarios against their own finn (gunicorn + Celery on a spare port, database
# finn_load, Redis DB 13): table on stdout, JSON + latency histogram PNG in bench/results/.
load: services install-dev
	$(BIN)/python bench/load.py $(LOAD_ARGS)
