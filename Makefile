# morpho: the two set-up commands are `make demo` and `make test`.
# Each creates .venv when it is missing and installs what it needs.
#
# torch is installed first, on its own, and then pinned (a constraints file
# holding the installed version) for every later pip call, so that no other
# package can pull in a different torch build. Choose the build with
#   make demo TORCH_SPEC='torch==2.13.0' TORCH_INDEX=https://download.pytorch.org/whl/cu128
# (TORCH_INDEX empty: the default index, e.g. PyPI).

SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# Hide one harmless, machine-specific warning of pip about missing local index folders.
QUIET_PIP := { grep -v 'is ignored: it is neither a file nor a directory' || true; }
DEMO_DIR ?= outputs/demo
DEMO_N ?= 1200

.PHONY: demo test install lint clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip 2>&1 | $(QUIET_PIP)

$(VENV)/torch-constraint.txt: | $(BIN)/python
	$(PIP) install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)" 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $@

$(VENV)/.installed: pyproject.toml $(VENV)/torch-constraint.txt
	$(PIP) install -q -c $(VENV)/torch-constraint.txt -e ".[test,notebooks]" 2>&1 | $(QUIET_PIP)
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/morpho-simulate n_galaxies=$(DEMO_N) output=$(DEMO_DIR)/galaxies.h5 overwrite=true
	$(BIN)/morpho-inspect data=simulated data.path=$(DEMO_DIR)/galaxies.h5 output_dir=$(DEMO_DIR)
	@echo ""
	@echo "Demo finished. Outputs are in $(DEMO_DIR)/:"
	@echo "  $(DEMO_DIR)/galaxies.h5           simulated galaxies (images, noiseless images, PSFs, truth)"
	@echo "  $(DEMO_DIR)/mosaic_by_class.png   a mosaic of galaxies, one row per morphology class"
	@echo "  $(DEMO_DIR)/summary.json          dataset summary and normalisation statistics"

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean-demo:
	rm -rf $(DEMO_DIR)
