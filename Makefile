# tradeserve: `make serve` sets up and runs the main job, `make test` sets up and runs the tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export TRADESERVE_HOME ?= $(CURDIR)/.tradeserve
export HF_HUB_OFFLINE ?= 1
export BENTOML_HOME ?= $(TRADESERVE_HOME)/bentoml
export BENTOML_CONFIG ?= $(CURDIR)/configuration.yaml
MLFLOW_UI_PORT ?= 5000
PORT ?= 3000

.PHONY: help setup demo serve test lint mlflow-ui bench clean build images run-image

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
		|| { echo "tradeserve needs Python 3.11 (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: 2.13.0 resolves to the local CPU wheel, never a CUDA download.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

setup: $(STAMP)  ## Create .venv and install everything (torch first)

demo: setup  ## Fill an empty registry with the demo models (idempotent)
	$(BIN)/tradeserve demo

serve: demo  ## Set up, fill the registry if empty, and serve the composite on localhost:$(PORT)
	$(BIN)/tradeserve models
	@echo "Serving RegimeBlend (+ Specialists) on http://127.0.0.1:$(PORT); the MLflow UI: make mlflow-ui"
	$(BIN)/bentoml serve --host 127.0.0.1 --port $(PORT)

mlflow-ui: setup  ## MLflow UI on the store everything else uses
	@if [ -n "$$MLFLOW_TRACKING_URI" ]; then \
		echo "MLFLOW_TRACKING_URI is set: open $$MLFLOW_TRACKING_URI"; exit 0; fi; \
	mkdir -p $(TRADESERVE_HOME); \
	$(BIN)/mlflow ui --host 127.0.0.1 --port $(MLFLOW_UI_PORT) \
		--backend-store-uri sqlite:///$(TRADESERVE_HOME)/mlflow.db \
		--default-artifact-root $(TRADESERVE_HOME)/mlartifacts

BENTOS := tradeserve-chronos tradeserve-factor tradeserve-specialists tradeserve-regime-blend tradeserve-model-manager
REGISTRY ?=

build: demo  ## Bake the promoted models into one bento per family (+ the composite)
	$(BIN)/tradeserve build

images: build  ## Container images of every bento and of MLflow (Docker with BuildKit, else buildah)
	$(BIN)/python -m bentos.images build --registry "$(REGISTRY)" $(BENTOS)
	@if $(BIN)/python -c 'import sys, bentos.images as i; sys.exit(not i.docker_works())'; then \
		docker build -t $(REGISTRY)tradeserve-mlflow:3.17.2 deploy/mlflow; \
	else buildah bud --isolation chroot --network host -t $(REGISTRY)tradeserve-mlflow:3.17.2 \
		deploy/mlflow || echo "tradeserve-mlflow skipped: deploy/mlflow needs python:3.11-slim"; fi

BENTO ?= tradeserve-factor
run-image:  ## Serve image $(BENTO) on localhost:$(PORT) (Docker, else buildah; ENGINE=podman)
	$(BIN)/python -m bentos.images run $(REGISTRY)$(BENTO) --port $(PORT) \
		$(if $(ENGINE),--engine $(ENGINE)) $(foreach e,$(IMAGE_ENV),--env $(e)) $(foreach v,$(IMAGE_VOLUMES),--volume $(v))

# Tests run in a shuffled order (pytest-randomly), the same one each time unless asked:
# TEST_ORDER= for a fresh random order, TEST_ORDER="-p no:randomly" for file order.
TEST_ORDER ?= --randomly-seed=20261204
test: setup  ## Run the whole test suite (shuffled order, fixed seed: TEST_ORDER)
	$(BIN)/ruff check .
	$(BIN)/pytest -q $(TEST_ORDER)

lint: setup  ## ruff check + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:  ## Remove the environment and all local state
	rm -rf $(VENV) $(TRADESERVE_HOME) .pytest_cache .ruff_cache
