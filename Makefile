# Entry points. Every target depends on `setup`, so each works from a fresh clone.
#   make run    - set up and run the whole study (dvc repro)
#   make test   - run the test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# stage commands (`python -m analysis ...`) run inside the project's environment
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup run test smoke bench paper paper-check reproduce verify clean-smoke

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

run: setup  ## the main job: download data and models, embed, probe, analyse
	$(BIN)/dvc repro

test: setup  ## the test suite, offline (CI runs exactly this)
	$(BIN)/python -m pytest

smoke: setup  ## the whole pipeline offline on fixtures and tiny random models (<3 min)
	$(BIN)/python -m analysis pipeline --params params.smoke.yaml

bench: setup  ## speed targets (see README)
	$(BIN)/python bench/run_all.py
