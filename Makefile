# Two entry points for a fresh clone: `make quickstart` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

TRT_BINDINGS := $(VENV)/tensorrt-bindings/.downloaded
OPENVINO_VENV := $(VENV)/openvino-check
MODELCONVERTER_VENV := $(VENV)/modelconverter-check

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
	$(BIN)/yolobench sweep quickstart

# TensorRT's real Python bindings (no libraries: PyPI hosts only the bindings as wheels), for the test that
# checks the TensorRT code and its fake against the real API of TensorRT 10.3 (JetPack 6) and 11.
$(TRT_BINDINGS): $(STAMP)
	$(BIN)/pip download -q --no-deps --only-binary :all: -d $(VENV)/tensorrt-bindings "tensorrt-cu12-bindings==10.3.0"
	$(BIN)/pip download -q --no-deps --only-binary :all: -d $(VENV)/tensorrt-bindings "tensorrt-cu12-bindings==11.4.0.106"
	touch $(TRT_BINDINGS)

# OpenVINO's Model Optimizer (openvino-dev 2024.6, the last with `mo`) for scripts/openvino_check.py, which a
# test runs on the OAK export: in its own venv, because it pins numpy below 2.2.
$(OPENVINO_VENV)/.installed: $(STAMP)
	$(PYTHON) -m venv $(OPENVINO_VENV)
	$(OPENVINO_VENV)/bin/pip install -q "openvino-dev==2024.6.0" "onnx>=1.15" onnxruntime
	touch $@

# Luxonis' ModelConverter (modelconv 0.6.2), whose own CLI parser and config loader read back the config file and
# command line yolobench writes (tests/test_modelconverter.py): in its own venv, because it pins onnx 1.22.
$(MODELCONVERTER_VENV)/.installed: $(STAMP)
	$(PYTHON) -m venv $(MODELCONVERTER_VENV)
	$(MODELCONVERTER_VENV)/bin/pip install -q "modelconv==0.6.2"
	touch $@

test: $(STAMP) $(TRT_BINDINGS) $(OPENVINO_VENV)/.installed $(MODELCONVERTER_VENV)/.installed
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"
