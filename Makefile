# rotwatch — `make help` lists the targets. Every setting below can be overridden:
#   make test PYTEST_ARGS="-k pubsub -x"
PYTHON ?= python3.11
VENV ?= .venv
EXTRAS ?= test,bench
PYTEST_ARGS ?=
HOST ?= 127.0.0.1
PUBSUB_PORT ?= 8085
DATASTORE_PORT ?= 8081
DATA_DIR ?= .rotwatch/emulators

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install test emulators bench clean

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install rotwatch with its test extras (quick when done)

test: $(STAMP) ## run the test suite (installs first if needed)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

emulators: $(STAMP) ## run local Pub/Sub and Datastore emulators in the foreground
	$(BIN)/rotwatch emulators start --host $(HOST) --pubsub-port $(PUBSUB_PORT) \
		--datastore-port $(DATASTORE_PORT) --data-dir $(DATA_DIR)

bench: $(STAMP) ## print the emulator benchmark figures
	$(BIN)/python bench/emulators.py

clean: ## remove the virtual environment and local data
	rm -rf $(VENV) .rotwatch build *.egg-info
