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
DEMO_N ?= 3000
DEMO_EPOCHS ?= 8
DEMO_DATA = data.source.path=$(DEMO_DIR)/galaxies.h5 data.prepare=null

.PHONY: demo test install lint clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip 2>&1 | $(QUIET_PIP)

$(VENV)/torch-constraint.txt: | $(BIN)/python
	$(PIP) install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)" 2>&1 | $(QUIET_PIP)
	$(BIN)/python -W ignore -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $@

$(VENV)/.installed: pyproject.toml $(VENV)/torch-constraint.txt
	$(PIP) install -q -c $(VENV)/torch-constraint.txt -e ".[test,notebooks]" 2>&1 | $(QUIET_PIP)
	touch $@

install: $(VENV)/.installed

demo: install
	rm -rf $(DEMO_DIR)
	$(BIN)/morpho-simulate n_galaxies=$(DEMO_N) output=$(DEMO_DIR)/galaxies.h5
	$(BIN)/morpho-inspect $(DEMO_DATA) output_dir=$(DEMO_DIR)
	$(BIN)/morpho-train experiment=taxonomy $(DEMO_DATA) trainer.max_epochs=$(DEMO_EPOCHS) \
		hydra.run.dir=$(DEMO_DIR)/train
	$(BIN)/morpho-embed $(DEMO_DATA) ckpt_path=$(DEMO_DIR)/train/checkpoints/last.ckpt \
		output=$(DEMO_DIR)/embeddings.parquet
	$(BIN)/morpho-cluster $(DEMO_DATA) embeddings=$(DEMO_DIR)/embeddings.parquet \
		output_dir=$(DEMO_DIR)/taxonomy
	@echo ""
	@echo "Demo finished. Outputs are in $(DEMO_DIR)/:"
	@echo "  galaxies.h5              simulated galaxies (images, noiseless images, PSFs, truth)"
	@echo "  mosaic_by_class.png      galaxies of each simulated morphology class"
	@echo "  summary.json             data set summary and normalisation statistics"
	@echo "  train/                   autoencoder checkpoints (checkpoints/) and logs (csv/)"
	@echo "  embeddings.parquet       one embedding per galaxy"
	@echo "  taxonomy/                taxonomy.parquet (cluster of every galaxy), taxonomy.morpho,"
	@echo "                           map.png, tree.png, typical_members.png, outliers.png"

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean-demo:
	rm -rf $(DEMO_DIR)
