VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-1g clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

## Generate a sample products file (if missing) and import it into SQLite with live progress.
run: $(STAMP)
	test -f products.csv || $(VENV)/bin/antioom generate products.csv --size 100MB
	$(VENV)/bin/antioom import products.csv --dataset products

## Run the linters and every test.
test: $(STAMP) lint
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

# The antioom under test is a production install (runtime dependencies only): the dev venv
# carries numpy, which pyarrow would import, inflating the measured RSS and start-up.
$(BENCH_STAMP): pyproject.toml
	test -x $(BENCH_VENV)/bin/python || python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e .
	touch $(BENCH_STAMP)

## Side-by-side benchmark (10 MB and 100 MB); BENCH_ARGS=--large adds 1 GB.
bench: $(STAMP) $(BENCH_STAMP)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) antioom.db products.csv .pytest_cache .mypy_cache .ruff_cache
