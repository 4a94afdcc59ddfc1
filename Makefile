# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv as needed.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup demo test lint wheel-check bench bench-differential bench-cohort clean rules-diff-demo

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	touch $@

setup: $(BIN)/.installed

demo: setup  ## screen every bundled example case, then show one full report
	$(BIN)/miss-screen rules check
	$(BIN)/miss-screen screen cases/examples/*.yaml --format brief
	$(BIN)/miss-screen screen cases/examples/disc-herniation-l4-l5.yaml

DIFF_DEMO = build/rules-diff-demo

# what moving one threshold (ACC-016: fusion of 3+ levels -> 2+ levels) does to the bundled cohort
rules-diff-demo: setup
	rm -rf $(DIFF_DEMO) && mkdir -p $(DIFF_DEMO) && cp -r rules $(DIFF_DEMO)/rules
	sed -i.bak 's/levels >= 3/levels >= 2/' $(DIFF_DEMO)/rules/access/ACC-016-multilevel-fusion.yaml
	rm $(DIFF_DEMO)/rules/access/*.bak
	$(BIN)/miss-screen rules diff rules $(DIFF_DEMO)/rules --cohort cases/cohort/synthetic-500.csv \
	    --out $(DIFF_DEMO)/report.md
	$(BIN)/miss-screen rules diff rules $(DIFF_DEMO)/rules --cohort cases/cohort/synthetic-500.csv \
	    --out $(DIFF_DEMO)/report.html --fail-on-change || echo "exit $$? (--fail-on-change: verdicts changed)"

lint: setup
	$(BIN)/ruff check engine cli.py tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

WHEEL_DIR = build/wheel-check

# The wheel, core only (no extra), installed in a throwaway venv and run from outside the
# checkout: it holds the one top-level package engine, screens the bundled cases and a CSV
# cohort, reports its version from the metadata, and names the extra a feature lacks.
wheel-check: setup
	rm -rf $(WHEEL_DIR) && mkdir -p $(WHEEL_DIR)
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir $(WHEEL_DIR) .
	$(BIN)/python -c 'import sys, zipfile; names = zipfile.ZipFile(sys.argv[1]).namelist(); \
	    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}; \
	    assert tops == {"engine"}, f"top-level entries besides engine: {tops}"' $(WHEEL_DIR)/*.whl
	$(PYTHON) -m venv $(WHEEL_DIR)/venv
	$(WHEEL_DIR)/venv/bin/python -m pip install --quiet $(WHEEL_DIR)/*.whl
	cd $(WHEEL_DIR) && venv/bin/miss-screen --version | grep -qx "miss-screen $$(sed -n 's/^version = "\(.*\)"/\1/p' $(CURDIR)/pyproject.toml)"
	cd $(WHEEL_DIR) && venv/bin/miss-screen rules check
	cd $(WHEEL_DIR) && venv/bin/miss-screen screen $(CURDIR)/cases/examples/*.yaml --format brief >/dev/null
	cd $(WHEEL_DIR) && venv/bin/miss-screen batch $(CURDIR)/cases/cohort/synthetic-500.csv --out cohort.csv \
	    --summary summary.json --workers 2 --progress none
	cd $(WHEEL_DIR) && ! venv/bin/miss-screen batch $(CURDIR)/cases/cohort/synthetic-500.csv --out r.jsonl \
	    --report r.html 2>missing.txt && grep -q "pip install 'miss-screen\[report\]'" missing.txt
	cd $(WHEEL_DIR) && venv/bin/miss-screen synth 20 --out synth-check.csv  # engine/synth/mix.yaml ships
	cd $(WHEEL_DIR) && venv/bin/python -c "from engine import Screener; print(Screener.load().screen({'case_id':'x','age_years':40}).verdict)"
	cd $(WHEEL_DIR) && venv/bin/python -c 'from importlib.resources import files; s = files("engine.service"); \
	    assert (s / "templates" / "form.html.j2").is_file() and (s / "static" / "form.css").is_file(), "web form files missing"'
	cd $(WHEEL_DIR) && venv/bin/python -c 'import engine, pathlib; \
	    assert "site-packages" in engine.__file__, engine.__file__; print("wheel OK:", engine.__file__)'

test: lint wheel-check  ## the test command CI runs: lint, the wheel, every golden case, then pytest on two processes (its summary last)
	$(BIN)/miss-screen rules test
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: setup  ## speed and memory targets, ratios against baselines in the same run
	$(BIN)/python benchmarks/bench.py
	$(MAKE) bench-differential

DIFFERENTIAL_ROWS ?= 1000000

bench-differential: setup  ## every engine's batch outputs on a 1M-row cohort, byte for byte
	$(BIN)/python benchmarks/differential.py --rows $(DIFFERENTIAL_ROWS)

# issue 29: every engine on a 1M-row Parquet cohort (built once, kept in a temp folder), 2 workers
# vs 1, peak RSS, screen_frame and an 11-point rules sweep; rewrites its block of results.md
bench-cohort: setup  ## the cohort engines, ratios against durable-rules in the same run
	$(BIN)/python benchmarks/bench_cohort.py --write

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
