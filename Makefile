# Entry points. Every target depends on `setup`, so each works from a fresh clone.
#   make run        - set up and run the whole study (dvc repro; the paper too where Quarto exists)
#   make test       - run the test suite (what CI runs)
#   make reproduce  - reviewer: dvc pull the pinned outputs, check dvc status, render the paper
#   make verify     - reviewer: recompute probes, statistics and RSA from the pulled embeddings
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# stage commands (`python -m analysis ...`) run inside the project's environment
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup run test smoke bench paper paper-check publish reproduce verify clean-smoke

setup: $(STAMP)

# torch and torchvision go in first, as the matched pair that PyPI builds together (on Linux its
# CUDA build, which runs on CPU too): OpenCLIP (the zoo encoders) imports torchvision, and a
# torchvision whose compiled ops do not fit the installed torch breaks every import of it,
# transformers' CLIP image processor included. `===` takes exactly PyPI's release, never a
# local build such as `2.13.0+cpu` from a wheel folder (pip ranks `+cpu` above the plain
# release, and PyPI has no CPU torchvision to match it). Override TORCH_PAIR for another pair
# that matches (e.g. a CPU pair from another index), keeping the versions of pyproject.toml.
TORCH_PAIR ?= torch===2.13.0 torchvision===0.28.0

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PAIR)
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -c "import torchvision.ops, open_clip" || { \
	    echo "torch and torchvision do not match (see TORCH_PAIR in the Makefile)"; exit 1; }
	touch $@

# Without Quarto the `paper` stage (python -m analysis paper) executes the manuscript's code
# cells instead of rendering them (python -m analysis paper_check) and says how to render.
HAVE_QUARTO := $(shell command -v quarto >/dev/null 2>&1 && echo yes)
export QUARTO_PYTHON := $(CURDIR)/$(BIN)/python

run: setup  ## the main job: download data and models, embed, probe, analyse, render (checked only, without Quarto)
	$(BIN)/dvc repro

test: setup  ## the test suite, offline (CI runs exactly this)
	$(BIN)/python -m pytest

# The smoke run works in .smoke/ so its outputs never mix with the study's results/ and data/.
SMOKE := .smoke
# With Quarto on PATH it also renders the paper from those outputs into .smoke/paper/_output/
# (index.html, index.pdf); paper/_output is never touched.
smoke: setup  ## the whole pipeline offline on fixtures and tiny random models, then the paper
	rm -rf $(SMOKE) && mkdir -p $(SMOKE)
	ln -s ../analysis ../tests $(SMOKE)/
	cp params.smoke.yaml $(SMOKE)/params.yaml
	cp dvc.yaml $(SMOKE)/dvc.yaml
	cd $(SMOKE) && $(CURDIR)/$(BIN)/python -m analysis pipeline --params params.yaml
	$(BIN)/python -m analysis paper_check --root $(SMOKE) --out $(SMOKE)/paper_check
ifeq ($(HAVE_QUARTO),yes)
	mkdir -p $(SMOKE)/paper
	tar -C paper --exclude=./_output --exclude=./.quarto --exclude=./figures --exclude=./_check \
	    --exclude=./_freeze -cf - . | tar -C $(SMOKE)/paper -xf -
	@start=$$(date +%s); cd $(SMOKE) && quarto render paper && \
	    echo "smoke paper rendered in $$(( $$(date +%s) - start )) s: $(SMOKE)/paper/_output/index.html, $(SMOKE)/paper/_output/index.pdf"
else
	@echo "quarto not on PATH: the smoke paper is checked ($(SMOKE)/paper_check/), not rendered"
endif

bench: setup  ## speed targets (see README)
	$(BIN)/python bench/run_all.py

paper: setup  ## render HTML + PDF into paper/_output (Quarto); without Quarto, run the paper check
ifeq ($(HAVE_QUARTO),yes)
	quarto render paper
else
	@echo "quarto not on PATH: executing the manuscript's code cells instead (paper/_check/)"
	$(BIN)/python -m analysis paper_check
endif

publish: paper  ## the rendered paper + CITATION.cff, .zenodo.json, LICENSE in dist/paper-<version>/ (a release)
	$(BIN)/python -m analysis publish

paper-check: setup  ## execute every code cell of the manuscript against results/ (no Quarto needed)
	$(BIN)/python -m analysis paper_check

reproduce: setup  ## reviewer: pull the pinned outputs, require a clean dvc status, render the paper
	$(BIN)/python -m analysis verify --pull
	$(BIN)/python -m analysis verify --status
	$(MAKE) paper

verify: setup  ## reviewer: recompute the cheap stages from pulled inputs and diff against pulled outputs
	$(BIN)/python -m analysis verify
