# Two entry points for a fresh clone: `make quickstart` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test test-fast setup

setup: $(STAMP)

# torch/torchvision are pinned here to the releases this project is tested with; pip takes them
# from a local wheel cache where one is configured.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -q -e ".[build,dev]"
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/yolobench sweep sweeps/quickstart.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"
