# sdegen developer commands. `make test` is what CI runs.
# `install` puts the package in .venv with every extra the tests, the docs and the
# command line use: dev (pytest, ruff, scipy), docs (mkdocs), cli (datasets, pillow,
# scikit-learn, matplotlib, tensorboardX).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install lint test test-fast docs demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,docs,cli]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

# lint and the whole test suite (slow statistical checks included); the suite's
# tests/test_docs.py builds the docs with `mkdocs build --strict` and checks the pages
test: install lint
	$(BIN)/python -m pytest -n 2 --dist worksteal -q -p no:cacheprovider --durations=25

test-fast: install
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

# NO_MKDOCS_2_WARNING silences mkdocs-material's banner about MkDocs 2.0
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

demo: install
	$(BIN)/sdegen demo --out out

bench: install
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) site out .pytest_cache .ruff_cache
