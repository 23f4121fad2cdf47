# Omnipipe developer commands. `make help` lists them.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TOOLS  := $(VENV)/.tools
DEMO_SECONDS ?= 60
BENCH_EVENTS ?= 500000
BENCH_REPEAT ?= 3

.DEFAULT_GOAL := help
.PHONY: help install demo test test-unit lint bench faults schemas clean

help: ## list the commands
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# promtool and the pinned Apache Kafka jars (scripts/install-tools says what it does)
$(TOOLS): $(STAMP) scripts/install-tools deploy/kafka/pom.xml
	scripts/install-tools $(BIN)/python
	touch $(TOOLS)

install: $(STAMP) $(TOOLS) ## create the virtualenv and install everything
	@echo "installed into $(VENV)"

demo: $(STAMP) $(TOOLS) ## embedded broker + worker + simulator, live summary (DEMO_SECONDS=60)
	$(BIN)/omnipipe demo --seconds $(DEMO_SECONDS)

test: $(STAMP) $(TOOLS) ## the whole test suite (unit, broker, end to end)
	$(BIN)/pytest -q

test-unit: $(STAMP) $(TOOLS) ## only tests that need no broker
	$(BIN)/pytest -q -m "not broker and not e2e"

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check pipeline tests
	$(BIN)/mypy

bench: $(STAMP) $(TOOLS) ## every stage vs raw passthroughs on Apache Kafka, then Tansu, ratios from one run each (BENCH_EVENTS=500000 BENCH_REPEAT=3)
	$(BIN)/omnipipe bench --broker kafka --events $(BENCH_EVENTS) --repeat $(BENCH_REPEAT)
	$(BIN)/omnipipe bench --broker tansu --events $(BENCH_EVENTS) --repeat $(BENCH_REPEAT)

faults: $(STAMP) $(TOOLS) ## fault scenarios on real workers over 3 Apache Kafka brokers (FAULTS_ARGS="--only crash" or "--broker tansu")
	$(BIN)/omnipipe faults $(FAULTS_ARGS)

schemas: $(STAMP) ## register changed schema sources as new versions (checks compatibility)
	$(BIN)/python -m pipeline.contracts.register

clean: ## remove the virtualenv and local state
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
