# ctloop task vocabulary: the same targets for people, hooks and CI.
SHELL := /bin/bash
UV ?= uv
RUN := $(UV) run --frozen
VIEW ?= credit_score
DAYS ?= 60
ROWS ?= 2000
BATCH ?= 100

.DEFAULT_GOAL := help
.PHONY: help install lint format test test-unit test-integration test-e2e demo test-fast init-db generate status bench-store bench-ct \
	bench-monitor bench-log bench-serving bench-replicas bench-shadow bench-load bench-ingest load-test clean serve bento serve-bento

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

install: ## Install system packages, uv and the locked Python environment
	@bash scripts/bootstrap.sh

lint: install ## ruff lint and format check, and the import contracts (layers, no cycles)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) lint-imports

format: install ## Apply ruff formatting and safe fixes
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

test: install ## Lint, then every tier: unit, integration, e2e (needs MariaDB :3306, PostgreSQL :5432, Redis :6379)
	@bash scripts/ensure-mariadb.sh
	@bash scripts/ensure-postgres.sh
	@bash scripts/ensure-redis.sh
	$(MAKE) --no-print-directory lint
	$(RUN) pytest $(PARALLEL) -m "not serial"
	$(RUN) pytest -m serial

# Two test files at a time (pytest-xdist, a module's tests on one worker, so its fixtures are
# made once): the tiers wait on processes (Airflow, bentoml serve, MariaDB) about half the
# time, so a second file fills the idle core. `serial` tests read server-wide counters or
# settings and run alone after. PARALLEL= runs one file at a time.
PARALLEL ?= -n 2 --dist loadfile

test-unit: ## The unit tier (tests/unit): no service needed, under a minute
	$(RUN) pytest tests/unit -q

test-integration: install ## The integration tier: real MariaDB, MLflow, bentoml serve, Airflow dag.test()
	@bash scripts/ensure-mariadb.sh
	@bash scripts/ensure-postgres.sh
	$(RUN) pytest $(PARALLEL) -m "not serial" tests/integration
	$(RUN) pytest -m serial tests/integration

test-e2e: install ## The e2e tier: `make up` for real (LocalExecutor and Celery), `make demo`, the load test
	@bash scripts/ensure-mariadb.sh
	@bash scripts/ensure-postgres.sh
	@bash scripts/ensure-redis.sh
	$(RUN) pytest $(PARALLEL) tests/e2e

ROLLOUT ?= direct
demo: install ## The whole loop on the embedded default (Airflow, BentoML, drift, retrain, swap); ROLLOUT=shadow: through a shadow trial and the live gate
	$(RUN) ctloop demo --rollout $(ROLLOUT)

test-fast: ## The test suite without install and lint
	$(RUN) pytest -x -q

init-db: install ## Create the feature store tables (FEATURE_STORE_URL or embedded SQLite)
	$(RUN) ctloop init-db

generate: init-db ## Generate DAYS days of ROWS rows of synthetic data
	$(RUN) ctloop generate $(VIEW) --days $(DAYS) --rows-per-day $(ROWS)

status: ## Row counts per day and label coverage
	$(RUN) ctloop status $(VIEW)

bench-store: install ## Store write/extract throughput on MariaDB vs the mariadb client
	@bash scripts/ensure-mariadb.sh
	$(RUN) python benchmarks/store_throughput.py

bench-ingest: install ## Ingestion of 1M rows: drop folder, SQL source, ctloop import vs LOAD DATA
	@bash scripts/ensure-mariadb.sh
	$(RUN) python benchmarks/ingest_throughput.py

bench-ct: install ## A CT run vs a bare CatBoost fit on the same rows (MariaDB)
	@bash scripts/ensure-mariadb.sh
	$(RUN) python benchmarks/ct_run.py

bench-monitor: install ## One monitor check over 100k, 1M and 10M logged predictions: time and client memory (MariaDB)
	@bash scripts/ensure-mariadb.sh
	$(RUN) python benchmarks/monitor_run.py $(if $(GROW_POOL),--grow-pool $(GROW_POOL))

bench-log: install ## Prediction-log inserts on MariaDB: rows/s, client and server CPU per row
	@bash scripts/ensure-mariadb.sh
	$(RUN) python benchmarks/log_insert.py

bench-retention: install ## Retention of a 1M-row log day on MariaDB: partition drop vs chunked DELETE, a writer's wait
	@bash scripts/ensure-mariadb.sh
	$(RUN) python benchmarks/log_retention.py --rows 1000000 --runs 3

bench-serving: install ## Serving throughput/latency (logged, unlogged, naive, mlflow); BATCH=100 records per batch
	@bash scripts/ensure-mariadb.sh
	$(RUN) python benchmarks/serving/serving_throughput.py --batch-size $(BATCH)

bench-replicas: install ## Two serving replicas behind HAProxy: the balancer's added latency, promotion to both under load
	@bash scripts/ensure-mariadb.sh
	$(RUN) python benchmarks/serving/replicas_overhead.py --duration 10 --runs 3

bench-shadow: install ## The caller's latency with and without a challenger on shadow trial
	@bash scripts/ensure-mariadb.sh
	$(RUN) python benchmarks/serving/shadow_overhead.py --duration 10 --runs 5 --concurrency 8 --shares 0.3,0.5

bench-load: install ## Locust at growing user counts against the shipped service, answered vs logged
	@bash scripts/ensure-mariadb.sh
	$(RUN) python benchmarks/load_saturation.py

USERS ?= 10
SPAWN_RATE ?= 2
DURATION ?= 30s
HOST ?= http://127.0.0.1:3000
LOAD_DIR ?= data/load
LOCUST_ARGS ?=

load-test: install ## Locust on the service at HOST (USERS, SPAWN_RATE, DURATION), then answered vs logged
	@run=$(LOAD_DIR)/$$(date -u +%Y%m%dT%H%M%SZ); mkdir -p $$run; \
	echo "==> $(USERS) users for $(DURATION) against $(HOST); reports in $$run"; \
	$(RUN) locust -f tests/load/locustfile.py --headless --host $(HOST) \
	  -u $(USERS) -r $(SPAWN_RATE) -t $(DURATION) --stop-timeout 10 --only-summary \
	  --csv $$run/locust --html $$run/report.html --answers-file $$run/answers.json \
	  $(LOCUST_ARGS); \
	status=$$?; \
	$(RUN) python -m tests.load.report $$run/answers.json --stats $$run/locust_stats.csv \
	  --json $$run/comparison.json || exit $$?; \
	exit $$status

PORT ?= 3000

serve: install ## Serve the champion with BentoML from the checkout on PORT (default 3000)
	$(RUN) bentoml serve serving.service:ModelService --host 127.0.0.1 --port $(PORT)

bento: install ## Build the serving Bento (bentoml build -f serving/bentofile.yaml .); tag in data/bento.tag
	@mkdir -p data
	@BENTOML_DO_NOT_TRACK=True $(RUN) bentoml build -f serving/bentofile.yaml . --output tag \
	  > data/bento.out || { cat data/bento.out; exit 1; }
	@sed -n 's/^__tag__://p' data/bento.out > data/bento.tag
	@test -s data/bento.tag || { echo "no Bento tag in the build output:"; cat data/bento.out; exit 1; }
	@echo "built Bento $$(cat data/bento.tag)"

serve-bento: bento ## Serve the Bento just built, by its exact tag (never :latest), on PORT
	BENTOML_DO_NOT_TRACK=True $(RUN) bentoml serve $$(cat data/bento.tag) --host 127.0.0.1 --port $(PORT)

# The long-running stack as processes of this machine (no Docker): Airflow api-server,
# scheduler, dag-processor and triggerer, the MLflow server, the BentoML service.
.PHONY: up down stack-status airflow
STACK := $(RUN) python -m ctloop.dev.stack

up: install ## Start Airflow, the MLflow server and serving as processes; print URLs and login
	$(STACK) up

down: ## Stop exactly the processes `make up` started
	$(STACK) down

ARGS ?= --help

airflow: ## Airflow's CLI against the local stack (its AIRFLOW_HOME and settings): make airflow ARGS="dags list"
	$(RUN) ctloop airflow $(ARGS)

stack-status: ## Each stack process: running, healthy, pid, URL (exit 1 unless all healthy)
	$(STACK) status

clean: ## Remove the embedded data folder and caches
	rm -rf data .pytest_cache .ruff_cache
