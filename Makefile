# Two entry points do all set-up on a fresh machine: `make demo` (the main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the optional extras `make setup` installs; CI adds more (.ci/run): make setup EXTRAS=test,lint,ray,tl,...
EXTRAS ?= test,lint

.PHONY: demo test test-fast lint setup clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU build of torch from the local wheel; an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/specprobe demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the linters CI runs: ruff (lint + format), pyright (basic) and the import-layer contracts
lint: $(STAMP)
	$(BIN)/ruff check specprobe tests bench scripts
	$(BIN)/ruff format --check specprobe tests bench scripts
	$(BIN)/pyright
	$(BIN)/lint-imports

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) build *.egg-info
