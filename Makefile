# Set-up is automatic: every target creates .venv and installs the project on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
NODES ?= 200000

.PHONY: demo test lint bench fixtures clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev,dask]'
	touch $@

demo: $(VENV)/.installed  ## generate 200K memories, convert them, verify, inspect
	rm -rf demo && mkdir -p demo
	$(BIN)/dualmem-bulk generate demo/memories.parquet --nodes $(NODES) --seed 7
	$(BIN)/dualmem-bulk convert demo/memories.parquet demo/nodes.lance
	$(BIN)/dualmem-bulk verify demo/nodes.lance.run
	$(BIN)/dualmem-bulk inspect demo/nodes.lance

lint: $(VENV)/.installed
	$(BIN)/ruff check dualmem_bulk tests benchmarks data/fixtures
	$(BIN)/mypy dualmem_bulk

test: lint  ## all gates: ruff, mypy --strict, pytest (warnings are errors)
	$(PY) -m pytest -q

bench: $(VENV)/.installed  ## benchmarks, not part of the test run
	$(PY) -m pytest benchmarks -q -o python_files="bench_*.py" -p no:cacheprovider

fixtures: $(VENV)/.installed
	$(PY) data/fixtures/make_fixtures.py

clean:
	rm -rf demo .pytest_cache .mypy_cache .ruff_cache
