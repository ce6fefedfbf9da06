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
# e.g. make demo DEMO_ARGS="--seed 3 --out /tmp/demo"
DEMO_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install lint test demo emulators bench clean

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install rotwatch with its test extras (quick when done)

lint: $(STAMP) ## pyflakes over every package, the tests and the benchmarks
	$(BIN)/python -m pyflakes setup.py rotwatch publishers pipelines trainer emulators tests bench

test: lint ## lint, then run the test suite (installs first if needed)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP) ## the zombie story end to end on a private local stack (~2.5 min), results in .rotwatch/demo/
	$(BIN)/rotwatch demo $(DEMO_ARGS)

emulators: $(STAMP) ## run local Pub/Sub and Datastore emulators in the foreground
	$(BIN)/rotwatch emulators start --host $(HOST) --pubsub-port $(PUBSUB_PORT) \
		--datastore-port $(DATASTORE_PORT) --data-dir $(DATA_DIR)

bench: $(STAMP) ## print the emulator benchmark figures
	$(BIN)/python bench/emulators.py

clean: ## remove the virtual environment and local data
	rm -rf $(VENV) .rotwatch build *.egg-info

# -- the streaming pipeline on Google Cloud Dataflow --------------------------------
# No defaults: a Dataflow job costs money, so every setting is given on purpose.
PROJECT ?=
REGION ?=
TEMP_LOCATION ?=
PIPELINE_ARGS ?=
.PHONY: run-dataflow

run-dataflow: $(STAMP) ## submit the streaming pipeline: PROJECT=p REGION=r TEMP_LOCATION=gs://b/tmp
	@test -n "$(PROJECT)" -a -n "$(REGION)" -a -n "$(TEMP_LOCATION)" || { \
		echo "error: set PROJECT, REGION and TEMP_LOCATION, e.g." >&2; \
		echo "  make run-dataflow PROJECT=my-project REGION=europe-west1 TEMP_LOCATION=gs://my-bucket/tmp" >&2; \
		echo "  (extra pipeline options: PIPELINE_ARGS=\"--window_size_s 600\")" >&2; \
		exit 2; }
	$(BIN)/python -m pipelines.feedback_pipeline --runner DataflowRunner \
		--project $(PROJECT) --region $(REGION) --temp_location $(TEMP_LOCATION) \
		--setup_file ./setup.py --streaming $(PIPELINE_ARGS)
