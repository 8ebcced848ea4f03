# Vigil: `make demo` runs the pipeline end to end, `make test` runs every test.
# Both set up what they need: the virtualenv, the packages, the Kafka jars.

PYTHON ?= python3
VENV ?= .venv
WORKDIR ?= .work
BIN := $(VENV)/bin

DATASETS ?= ../shared/datasets

.PHONY: setup demo test lint typecheck unit integration kafka-jars deploy-check bench clean

setup: $(VENV)/.installed

# Compiled sources (detectors/compiled.py, which setup.py reads too): an edit to one
# compiles them again.
COMPILED_MODULE_SOURCES := $(shell $(PYTHON) -c 'import runpy; \
  print(*(m.replace(".", "/") + ".py" for m in runpy.run_path("detectors/compiled.py")["COMPILED_MODULES"]))')
ifeq ($(strip $(COMPILED_MODULE_SOURCES)),)
$(error could not list the compiled modules with PYTHON=$(PYTHON) (detectors/compiled.py))
endif
COMPILED_SOURCES := detectors/compiled.py $(COMPILED_MODULE_SOURCES)

$(VENV)/.installed: pyproject.toml setup.py $(COMPILED_SOURCES)
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

test: lint typecheck deploy-check kafka-jars
	$(BIN)/pytest -q tests --doctest-modules detectors stream schemas

# Kubernetes manifests (deploy/k8s): render each kustomization with kubectl and validate
# every object offline, strictly, against a pinned Kubernetes version.
KUBECTL ?= kubectl
K8S_VERSION ?= 1.32.0

deploy-check: setup
	$(BIN)/python deploy/k8s/check.py --kubectl $(KUBECTL) --kubernetes-version $(K8S_VERSION)

# The declared benchmark settings: service default HST, the quality HST, forests, ensemble.
QUALITY_DETECTORS = hst,hst-50x9-paper,iforest,iforest-512x8k,iforest-insert,rcf-512x8k-insert,ensemble:iforest+hst-50x9-paper

# Figures and ratios against baselines measured in the same run (river, pyod).
bench: setup kafka-jars
	$(BIN)/vigil bench speed
	$(BIN)/vigil bench pipeline
	$(BIN)/vigil bench state --kafka --workdir $(WORKDIR)
	$(BIN)/vigil bench replay --workdir $(WORKDIR)
	for d in mammography shuttle smtp forestcover http; do \
	  $(BIN)/vigil bench quality --data $(DATASETS)/$$d/$$d.npz --order shuffled --seeds 0-4 \
	    --detectors $(QUALITY_DETECTORS); \
	done
	for d in http shuttle; do \
	  $(BIN)/vigil bench quality --data $(DATASETS)/$$d/$$d.npz --order original; \
	done

clean:
	rm -rf $(VENV) $(WORKDIR)
