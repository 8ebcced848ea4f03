# Vigil: `make demo` runs the pipeline end to end, `make test` runs every test.
# Both set up what they need: the virtualenv, the packages, the Kafka jars.

PYTHON ?= python3
VENV ?= .venv
WORKDIR ?= .work
BIN := $(VENV)/bin

.PHONY: setup demo test lint typecheck unit integration kafka-jars clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

kafka-jars: setup
	$(BIN)/vigil kafka fetch --workdir $(WORKDIR)

demo: setup
	$(BIN)/vigil demo --workdir $(WORKDIR)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q tests/unit --doctest-modules detectors stream schemas

integration: setup kafka-jars
	$(BIN)/pytest -q tests/integration

test: lint typecheck kafka-jars
	$(BIN)/pytest -q tests --doctest-modules detectors stream schemas

clean:
	rm -rf $(VENV) $(WORKDIR)
