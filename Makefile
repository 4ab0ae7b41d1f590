# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Both create .venv when it is missing and install the package with its test extras.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
export PYTHONHASHSEED := 0
# pip installs the playwright package only; the journeys use Debian's chromium (browser-deps).
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: run sweep test lint unit notebook-tests notebooks clean bench soak cosmos-server browser-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable '.[test]'
	touch $(STAMP)

## run: execute every notebook through papermill on the local target; writes runs/<timestamp>/
run: $(STAMP)
	$(BIN)/workbook run

## sweep: run every point of a parameter matrix (MATRIX, default examples/sweep.yaml) and write the trend report
MATRIX ?= examples/sweep.yaml
SWEEP_WORKERS ?= 2
sweep: $(STAMP)
	$(BIN)/workbook run --matrix $(MATRIX) --workers $(SWEEP_WORKERS)
	$(BIN)/workbook report runs

## test: lint, unit and SDK tests, papermill on the shared corpus, nbval on the committed notebooks
test: lint unit notebook-tests

lint: $(STAMP)
	$(BIN)/ruff check workbook tests benchmarks
	$(BIN)/ruff format --check workbook tests benchmarks

# Most tests wait on SDK links and timers rather than the CPU, so four workers pay off even on two
# cores; a worker takes whole files, so a module's emulator and notebook run are started once.
PYTEST_WORKERS ?= 4
XDIST := -n $(PYTEST_WORKERS) --dist loadfile

unit: $(STAMP) cosmos-server browser-deps
	$(BIN)/pytest -q $(XDIST)

notebook-tests: $(STAMP)
	$(BIN)/pytest -q $(XDIST) --nbval notebooks --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

## notebooks: re-execute every notebook in place and strip volatile metadata (commit the result)
notebooks: $(STAMP)
	$(BIN)/python -m workbook.cli.refresh $(NOTEBOOKS)
	$(BIN)/nbstripout --keep-output --keep-count --extra-keys "metadata.widgets metadata.language_info.version" $(NOTEBOOKS)

clean:
	rm -rf runs .pytest_cache

## bench: SDK throughput vs a null AMQP server, router, event store vs eventsourcing, sagas, client reuse,
## notebook suite wall time; rewrites benchmarks/README.md
bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/router.py
	$(BIN)/python benchmarks/eventstore.py
	$(BIN)/python benchmarks/sagas.py
	$(BIN)/python benchmarks/client_reuse.py
	$(BIN)/python benchmarks/notebook_suite.py

## soak: orders through route -> transform -> handle with 1% poison while SIGKILL hits the emulator and
## both workers; checks every order completed once or dead-lettered, rewrites its section of benchmarks/README.md
SOAK_MESSAGES ?= 100000
soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py --messages $(SOAK_MESSAGES) --kill-every 20 --write-readme

## browser-deps: install Debian's chromium for the browser journeys (apt-get, as root); Playwright comes with '.[test]'
# Playwright drives /usr/bin/chromium and downloads no browser of its own.
browser-deps:
	test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

## cosmos-server: install the pinned Cosmos DB test server (needs npm); without it the Cosmos DB tests are skipped
cosmos-server: tests/cosmos_server/node_modules/.package-lock.json
tests/cosmos_server/node_modules/.package-lock.json: tests/cosmos_server/package-lock.json
	npm ci --prefix tests/cosmos_server --no-audit --no-fund
