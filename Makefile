# The two commands: `make run` (the main job) and `make test` (the test suite).
# Each does its own idempotent set-up first (scripts/setup.sh).
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export OMP_WAIT_POLICY := PASSIVE

.PHONY: run report exps test setup lint bench mutation clean-outputs

setup:
	@bash scripts/setup.sh

run: setup
	dvc repro
	@dvc metrics show $$(find metrics -name '*.json' ! -name '*.details.json' | sort)  # headlines
	@echo "Run report (one self-contained page, opens offline): $(CURDIR)/reports/run.html"

report: setup
	onceflow report

# `dvc exp show` on its side (one row per headline or changed param, one column per run; see
# `onceflow exps --help`): plain `dvc exp show --only-changed` is hundreds of characters wide.
exps: setup
	@onceflow exps

# The suite on up to 4 xdist workers (one per core), a test module per worker at a time (its
# module fixtures built once); the longest modules start first (tests/conftest.py).
TEST_WORKERS ?= $(shell n=$$(nproc); echo $$(( n < 4 ? n : 4 )))
test: setup
	pytest -q -n $(TEST_WORKERS) --dist loadscope

lint: setup
	ruff check src stages flows tests benchmarks
	ruff format --check src stages flows tests benchmarks

# Mutation testing of the core (not in CI; ~15-25 min on 2 cores): mutmut 3 mutates the modules
# listed under [tool.mutmut] in pyproject.toml, in a copy of the tree (./mutants), and runs for
# each mutant only the selected tests that reach the mutated function; then the kill rate per
# module (fails under 85%). `mutmut browse` / `mutmut show NAME` explain a survivor.
mutation: setup
	rm -rf mutants
	env -u PYTHONPATH mutmut run --max-children 2 > mutants.log 2>&1 || (tail -n 30 mutants.log; exit 1)
	python scripts/mutation_report.py --min 85

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; python $$b; done
