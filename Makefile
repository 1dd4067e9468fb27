# Entry points. Every target depends on `setup`, so each works from a fresh clone.
#   make run        - set up and run the whole study (dvc repro; the paper too where Quarto exists)
#   make test       - run the test suite (what CI runs)
#   make reproduce  - reviewer: dvc pull the pinned outputs, check dvc status, render the paper
#   make verify     - reviewer: recompute probes, statistics and RSA from the pulled embeddings
#   make zoo        - the study plus the model zoo (models.zoo, matched twins) as DVC experiment `zoo`
#   make zoo-queue  - the same, its parts first as queued experiments, JOBS at a time (JOBS=2)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# stage commands (`python -m analysis ...`) run inside the project's environment
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup run test smoke bench paper paper-check publish reproduce verify clean-smoke zoo zoo-queue

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

# VERIFY_ARGS: e.g. "--units sbert clip_text bow clip" to recompute only those conditions' and pairs'
# per-condition stages (every one by default)
VERIFY_ARGS ?=
verify: setup  ## reviewer: recompute the cheap stages from pulled inputs and diff against pulled outputs
	$(BIN)/python -m analysis verify $(VERIFY_ARGS)

# The model zoo (issue 14). Its conditions.text list has one home: `python -m analysis zoo_profile`
# derives it from params.yaml (conditions.text, then each pair of conditions.matched with the seed-0
# random twins of both sides, then every other model of models.zoo), whole or by part.
# ZOO_NAME: the experiment's name (a name is taken once per commit; zoo-queue's part experiments
# are $(ZOO_NAME)-<part>); ZOO_TARGETS: DVC targets of the zoo run (default: the whole pipeline,
# e.g. ZOO_TARGETS=stats); JOBS: zoo-queue's experiments run at a time.
ZOO_PROFILE = $(BIN)/python -m analysis zoo_profile
ZOO_NAME ?= zoo
ZOO_TARGETS ?=
JOBS ?= 2

zoo: setup  ## the study's conditions plus the model zoo as one DVC experiment (the models' weights need the hub)
	$(BIN)/dvc exp run -n $(ZOO_NAME) -S "conditions.text=$$($(ZOO_PROFILE))" $(ZOO_TARGETS)

# The parts run as queued experiments (each in its own temporary copy, JOBS at a time), each
# embedding and probing its own conditions only (targets probe_suite@<condition>; with the full
# list as conditions.text, so that every stage reads the params the zoo run will). Their stages
# go to DVC's run-cache, from which `make zoo` then restores them ("Stage 'embed@...' is cached -
# skipping run, checking out outputs"): only the stages across conditions run there. The shared
# inputs are made here first, and each part gets this workspace's dvc.lock (-C: a queued
# experiment takes committed files only); --allow-missing lets a part skip an unchanged stage
# whose outputs are not in the cache (the COCO images, the VSR report) instead of re-running it.
zoo-queue: setup  ## the zoo's parts as queued experiments, JOBS at a time, then `make zoo` from the run-cache
	$(BIN)/dvc repro vsr templates images
	@set -e; list="$$($(ZOO_PROFILE))"; parts="$$($(ZOO_PROFILE) --parts)"; \
	echo "each part with conditions.text=$$list"; \
	for part in $$parts; do \
	    targets="$$($(ZOO_PROFILE) --part $$part --targets)"; \
	    echo "dvc exp run --queue -C dvc.lock --allow-missing -n $(ZOO_NAME)-$$part -S conditions.text=<list> $$targets"; \
	    $(BIN)/dvc exp run --queue -C dvc.lock --allow-missing -n $(ZOO_NAME)-$$part -S "conditions.text=$$list" $$targets; \
	done
	$(BIN)/dvc queue start --jobs $(JOBS)
	@echo "waiting for the queue (dvc queue status; a part's log: dvc queue logs $(ZOO_NAME)-<part>)"
	@while $(BIN)/dvc queue status | grep -qwE 'Queued|Running'; do sleep 5; done
	@set -e; ran="$$($(BIN)/dvc exp list --name-only)"; parts="$$($(ZOO_PROFILE) --parts)"; \
	for part in $$parts; do echo "$$ran" | grep -qx "$(ZOO_NAME)-$$part" || { \
	    echo "experiment $(ZOO_NAME)-$$part did not succeed: dvc queue logs $(ZOO_NAME)-$$part"; exit 1; }; done
	$(MAKE) zoo
