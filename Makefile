# Two commands on a fresh clone: `make run` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RECIPES := $(VENV)/.recipes
DOCSTAMP := $(VENV)/.docs

.PHONY: install run reproduce two-task city-methods fashion-mnist qm9 test test-fast lint typecheck docs docs-serve pytest bench clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

## .venv with the pinned versions, for the commands of the README's first run.
install: $(STAMP)

## The main job on built-in data (no download): Table 1 of the paper on the synthetic city,
## CPU preset, one seed (the city is generated on first use).
run: $(STAMP)
	$(BIN)/umtl reproduce table1 --preset cpu --out runs/reproduce-cpu

## Every experiment of the paper, and the methods benchmark, on the CPU preset, 3 seeds; runs
## shared with `make run`.
reproduce: $(STAMP)
	$(BIN)/umtl reproduce table1 --preset cpu --seeds 3 --out runs/reproduce-cpu
	$(BIN)/umtl reproduce figure2 --preset cpu --seeds 3 --out runs/reproduce-cpu
	$(BIN)/umtl reproduce appendix-b --preset cpu --out runs/reproduce-cpu
	$(BIN)/umtl reproduce units --preset cpu --seeds 3 --out runs/reproduce-cpu
	$(BIN)/umtl reproduce ablations --preset cpu --seeds 3 --out runs/reproduce-cpu
	$(BIN)/umtl reproduce methods --preset cpu --seeds 3 --out runs/reproduce-cpu

## The two-task study of the reproduction report on scikit-learn's digits, 5 seeds, then every
## other weighting method beside its rows, at the preset's rate and with tuned rates (each
## command reuses the runs of the ones before it).
two-task: $(STAMP)
	$(BIN)/umtl reproduce two-task --dataset digits --seeds 5 --out runs/two-task-digits
	$(BIN)/umtl reproduce methods --dataset digits --seeds 5 --out runs/two-task-digits
	$(BIN)/umtl reproduce methods --dataset digits --seeds 5 --protocol tuned --out runs/two-task-digits

## The city's methods on the cpu-lite preset (the synthetic city at 32×64): every method and
## its units test (depth ×100) at the preset's rate, 3 seeds; then the tuned protocol's SGD and
## Adam arms, 5 seeds (each command reuses the runs of the ones before it).
city-methods: $(STAMP)
	$(BIN)/umtl reproduce methods --preset cpu-lite --seeds 3 --out runs/reproduce-cpu-lite
	$(BIN)/umtl reproduce methods --preset cpu-lite --seeds 5 --protocol tuned --optimiser sgd --out runs/reproduce-cpu-lite
	$(BIN)/umtl reproduce methods --preset cpu-lite --seeds 5 --protocol tuned --optimiser adam --out runs/reproduce-cpu-lite

## The same study on Fashion-MNIST (Debian's dataset-fashion-mnist, or --data-dir): the
## learning curves that chose its presets' batch and epochs on val, then the short preset's
## study, 3 seeds (about 40 min of curves and 90 min of study on 2 cores; `--preset cpu`, the
## full protocol, about 4.5 hours).
fashion-mnist: $(STAMP)
	$(BIN)/umtl reproduce two-task --dataset fashion-mnist --curves
	$(BIN)/umtl reproduce two-task --dataset fashion-mnist --preset short --seeds 3

## QM9, 11 targets in their units (the PyPI package qm9pack holds the files): the single-task
## references and 6 multi-task rows under both target scalings, 5 seeds (about 95 min on 2 cores).
qm9: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[qm9]'
	$(BIN)/umtl reproduce qm9 --out runs/qm9

## Lint, type-check the package, build the docs site, run the test suite.
test: lint typecheck docs pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples tools
	$(BIN)/ruff format --check src tests bench examples tools

typecheck: $(STAMP)
	$(BIN)/mypy

## The documentation site (MkDocs Material, API reference by mkdocstrings) into site/; a warning
## fails the build. `make docs-serve` serves it at http://127.0.0.1:8000 while you edit.
docs: $(STAMP) $(DOCSTAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(STAMP) $(DOCSTAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

## The documentation's tools only (the API reference reads the source, it imports nothing).
$(DOCSTAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[docs]'
	touch $(DOCSTAMP)

## The trainer frameworks the recipes of examples/ need, QM9's files, its graph network and the
## documentation's tools (its page tests): for the tests only, so that `make run` installs no
## more than it uses.
$(RECIPES): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[recipes,qm9,gnn,docs]'
	touch $(RECIPES)

pytest: $(STAMP) $(RECIPES)
	$(BIN)/pytest

## While developing: the suite without the tests marked slow (whole studies, kill -9 cases).
test-fast: $(STAMP) $(RECIPES)
	$(BIN)/pytest -m "not slow"

## Benchmarks print JSON; they are run on demand, never by the tests.
bench: $(STAMP)
	$(BIN)/python bench/bench_weighting.py
	$(BIN)/python bench/bench_data.py
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_clustering.py
	$(BIN)/python bench/bench_fashion_mnist.py
	$(BIN)/python bench/bench_qm9.py

clean-venv:
	rm -rf $(VENV)
