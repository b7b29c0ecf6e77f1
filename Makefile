# Two entry points from a fresh clone: `make demo` and `make test`.
# Each builds .venv from the project's own files first (quick when nothing changed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint fmt serve browser bench fuzz notebook docs clean clean-cache

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gradfit demo

serve: $(STAMP)  # the playground on http://127.0.0.1:8000/ (Ctrl-C stops it)
	$(BIN)/gradfit serve

test: $(STAMP) browser lint
	$(BIN)/python -m pytest

# ruff (configured in pyproject.toml): a lint or format error fails `make test`, and so CI; `make fmt` fixes
# what it can
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The report's and the playground's end-to-end tests drive Debian's Chromium (Playwright's own
# browser download does not work offline). Installed once, as root; elsewhere those tests skip.
browser:
	@test -x /usr/bin/chromium || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

notebook: $(STAMP)  # opens docs/tutorial.ipynb in JupyterLab (an optional extra: $(BIN)/pip install -e '.[notebook]')
	@$(BIN)/python -c "import jupyterlab" 2>/dev/null || \
		(echo "make notebook needs JupyterLab: $(BIN)/pip install -e '.[notebook]'"; exit 1)
	$(BIN)/jupyter lab docs/tutorial.ipynb

docs: $(STAMP)  # the documentation site into site/ (strict: a broken link or reference fails); open site/index.html
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

fuzz: $(STAMP)  # the expression language's fuzz tests, far longer than in `make test`
	GRADFIT_FUZZ_EXAMPLES=100000 $(BIN)/python -m pytest -q tests/test_expr.py -k fuzz

bench: $(STAMP)
	$(BIN)/python bench/bench_startup.py
	$(BIN)/python bench/bench_demo.py
	$(BIN)/python bench/bench_fit.py
	$(BIN)/python bench/bench_batch.py
	$(BIN)/python bench/bench_playground.py
	$(BIN)/python bench/bench_playground_attack.py
	$(BIN)/python bench/bench_stream.py
	$(BIN)/python bench/bench_dask.py
	$(BIN)/python bench/bench_starts.py
	$(BIN)/python bench/bench_global.py
	$(BIN)/python bench/bench_constraints.py
	$(BIN)/python bench/bench_lineshapes.py
	$(BIN)/python bench/bench_profile.py

clean: clean-cache
	rm -rf $(VENV) gradfit-demo .pytest_cache site .cache

# numba's compiled solver (src/gradfit/**/__pycache__/*.nbi, *.nbc), to start afresh. numba sees a change to the
# file that holds a function only; solvers/compiled_lm.py drops its cache itself when lm_rules.py or
# compiled_interp.py, which it inlines, is newer
clean-cache:
	find src -name '*.nbi' -delete -o -name '*.nbc' -delete
