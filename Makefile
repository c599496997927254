# Two commands for a new user: `make dev` runs the product, `make test` passes the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_HTTP_PORT ?= 8010
ML_PORT ?= 8001

DEV_ENV := DAGSTER_HOME=$(CURDIR)/.dagster_home \
	MASTER_SHEET_URL=$(CURDIR)/.data/demo/master_sheet.csv \
	LOCAL_SOURCES_ROOT=$(CURDIR)/.data/demo/files \
	SHARED_UPLOADS_DIR=$(CURDIR)/.data/shared/uploads \
	DOWNLOADS_DIR=$(CURDIR)/.data/downloads \
	INBOX_DIR=$(CURDIR)/.data/inbox \
	SSRF_ALLOWED_HOSTS=127.0.0.1,localhost \
	ML_ANALYZE_URL=http://127.0.0.1:$(ML_PORT) \
	CATALOGUE_DATABASE_URL=sqlite:///$(CURDIR)/.data/catalogue.sqlite3

.PHONY: dev test lint lock clean status bench

$(STAMP): pyproject.toml requirements.lock deployment/ml_analyze_reference/pyproject.toml
	@echo "Installing into $(VENV) (once; about a minute) ..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --progress-bar off --constraint requirements.lock \
		--editable '.[test]' --editable deployment/ml_analyze_reference \
		| grep --line-buffered -E '^(Collecting|Successfully|ERROR)' || true
	$(BIN)/python -c 'import dagster, ingestion_assets, ml_analyze_reference, pytest, playwright'
	touch $(STAMP)

## make dev: the Dagster UI on http://127.0.0.1:3000 with the demo suppliers, synced at start,
## beside the reference ml-analyze (:8001) and a static server for the demo's URL source (:8010),
## both writing into an embedded SQLite catalogue (.data/catalogue.sqlite3). Ctrl-C stops it all;
## logs in .data/logs/.
dev: $(STAMP)
	@$(DEV_ENV) exec $(BIN)/python -m ingestion_assets.demo.run --ui-port 3000 \
		--ml-port $(ML_PORT) --http-port $(DEMO_HTTP_PORT)

## make test: the whole test suite, against real servers on loopback.
test: $(STAMP)
	$(BIN)/python -m pytest

## make drills: fault drills against the real product (load, crashes, disk full, hostile input,
## clean-up under load); prints a table and writes the figures into docs/reliability.md.
.PHONY: drills
drills: $(STAMP)
	$(BIN)/python -m ingestion_assets_tests.drills

## make status: one line per supplier of the `make dev` instance.
status: $(STAMP)
	@$(DEV_ENV) $(BIN)/python -m ingestion_assets status

## make bench: the benchmarks (figures and ratios against floors measured in the same run).
bench: $(STAMP)
	$(BIN)/python -m benchmarks

## make lint: ruff (check and format) and mypy --strict on the package and the reference server.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## make lock: refresh requirements.lock after changing dependencies in pyproject.toml.
lock:
	$(BIN)/pip freeze --exclude-editable | sort > requirements.lock

clean:
	rm -rf .dagster_home .data
