# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv as needed.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dask]'
	touch $@

setup: $(BIN)/.installed

demo: setup  ## screen every bundled example case, then show one full report
	$(BIN)/miss-screen rules check
	$(BIN)/miss-screen screen cases/examples/*.yaml --format brief
	$(BIN)/miss-screen screen cases/examples/disc-herniation-l4-l5.yaml

lint: setup
	$(BIN)/ruff check engine cli.py tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint  ## the test command CI runs: lint, every golden case, then pytest (its summary last)
	$(BIN)/miss-screen rules test
	$(BIN)/python -m pytest -q

bench: setup  ## speed and memory targets, ratios against baselines in the same run
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
