VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench corpus clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Serve the dashboard and API on the embedded SQLite default (a sample products.csv is
## generated if missing: upload it from the dashboard or with `antioom upload`).
## SAMPLE_SIZE=10MB makes a smaller sample; ANTIOOM_PORT / ANTIOOM_HOST move the server.
SAMPLE_SIZE ?= 100MB
run: $(STAMP)
	test -f products.csv || $(VENV)/bin/antioom generate products.csv --size $(SAMPLE_SIZE)
	$(VENV)/bin/antioom serve

## Run the linters and every test (test files side by side in 4 processes: most tests wait
## on servers, workers and databases rather than on the CPU).
test: $(STAMP) lint
	$(PY) -m pytest -q -n 4 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

BENCH_VENV := .venv-bench
PANDAS_VENV := .venv-pandas
CORPUS_VENV := .venv-corpus

# The antioom under test is a production install (runtime dependencies only), and pandas has
# a venv of its own: with numpy or pandas importable, pyarrow imports them, which adds tens of
# MB to antioom's RSS and time to its start-up that a production install does not have.
$(BENCH_VENV)/.installed: pyproject.toml
	test -x $(BENCH_VENV)/bin/python || python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e .
	touch $@

$(PANDAS_VENV)/.installed: pyproject.toml
	test -x $(PANDAS_VENV)/bin/python || python3 -m venv $(PANDAS_VENV)
	$(PANDAS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PANDAS_VENV)/bin/python -m pip install --quiet -e '.[bench]'
	touch $@

## Side-by-side benchmark (10 MB and 100 MB); BENCH_ARGS=--large adds 1 GB.
bench: $(STAMP) $(BENCH_VENV)/.installed $(PANDAS_VENV)/.installed
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# DuckDB is the reference reader for the messy-CSV corpus; it gets a venv of its own so the
# dev venv stays as CI installs it.
$(CORPUS_VENV)/.installed: pyproject.toml
	test -x $(CORPUS_VENV)/bin/python || python3 -m venv $(CORPUS_VENV)
	$(CORPUS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CORPUS_VENV)/bin/python -m pip install --quiet -e '.[corpus]'
	touch $@

## Agreement with DuckDB on ~270 generated messy CSVs; CORPUS_ARGS="--only bom --keep" etc.
corpus: $(CORPUS_VENV)/.installed
	$(CORPUS_VENV)/bin/python benchmarks/corpus.py --report benchmarks/data/corpus-report.md $(CORPUS_ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(PANDAS_VENV) $(CORPUS_VENV) antioom.db products.csv .pytest_cache .mypy_cache .ruff_cache
