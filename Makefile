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
MLFLOW_UI_PORT ?= 5000

.PHONY: help setup demo serve test lint mlflow-ui bench clean

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

serve: demo  ## Set up, fill the registry if empty, and serve (MLflow UI on the same store)
	$(BIN)/tradeserve models
	$(MAKE) --no-print-directory mlflow-ui

mlflow-ui: setup  ## MLflow UI on the store everything else uses
	@if [ -n "$$MLFLOW_TRACKING_URI" ]; then \
		echo "MLFLOW_TRACKING_URI is set: open $$MLFLOW_TRACKING_URI"; exit 0; fi; \
	mkdir -p $(TRADESERVE_HOME); \
	$(BIN)/mlflow ui --host 127.0.0.1 --port $(MLFLOW_UI_PORT) \
		--backend-store-uri sqlite:///$(TRADESERVE_HOME)/mlflow.db \
		--default-artifact-root $(TRADESERVE_HOME)/mlartifacts

test: setup  ## Run the whole test suite
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: setup  ## ruff check + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:  ## Remove the environment and all local state
	rm -rf $(VENV) $(TRADESERVE_HOME) .pytest_cache .ruff_cache
