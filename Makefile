# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Both create .venv when it is missing and install the package with its test extras.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
export PYTHONHASHSEED := 0

.PHONY: run test lint unit notebook-tests notebooks clean bench cosmos-server

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable '.[test]'
	touch $(STAMP)

## run: execute every notebook through papermill on the local target; writes runs/<timestamp>/
run: $(STAMP)
	$(BIN)/workbook run

## test: lint, unit and SDK tests, papermill on the shared corpus, nbval on the committed notebooks
test: lint unit notebook-tests

lint: $(STAMP)
	$(BIN)/ruff check workbook tests benchmarks
	$(BIN)/ruff format --check workbook tests benchmarks

unit: $(STAMP) cosmos-server
	$(BIN)/pytest -q

notebook-tests: $(STAMP)
	$(BIN)/pytest -q --nbval notebooks --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

## notebooks: re-execute every notebook in place and strip volatile metadata (commit the result)
notebooks: $(STAMP)
	$(BIN)/python -m workbook.cli.refresh $(NOTEBOOKS)
	$(BIN)/nbstripout --keep-output --keep-count --extra-keys "metadata.widgets metadata.language_info.version" $(NOTEBOOKS)

clean:
	rm -rf runs .pytest_cache

## bench: SDK throughput vs a null AMQP server, router, event store vs eventsourcing, sagas; rewrites benchmarks/README.md
bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/router.py
	$(BIN)/python benchmarks/eventstore.py
	$(BIN)/python benchmarks/sagas.py

## cosmos-server: install the pinned Cosmos DB test server (needs npm); without it the Cosmos DB tests are skipped
cosmos-server: tests/cosmos_server/node_modules/.package-lock.json
tests/cosmos_server/node_modules/.package-lock.json: tests/cosmos_server/package-lock.json
	npm ci --prefix tests/cosmos_server --no-audit --no-fund
