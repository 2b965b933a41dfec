# The course's commands. `make book` and `make test` set up everything they need in .venv.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
JOBS ?= 2
CELL_TIMEOUT ?= 600
MATHJAX_VERSION := 3.2.2
MATHJAX := .build/assets/mathjax/tex-chtml.js
# Notebooks that train a model later chapters reuse go first (chapter 9 samples from chapter 7's GPT through
# lmcourse.zoo), and long ones early; --no-loadscope-reorder keeps this order (xdist would sort by cell count).
FIRST_NOTEBOOKS := notebooks/07_transformer.ipynb notebooks/05_lstm.ipynb notebooks/03_mlp_lm.ipynb
NOTEBOOKS := $(FIRST_NOTEBOOKS) $(filter-out $(FIRST_NOTEBOOKS),$(sort $(wildcard notebooks/*.ipynb)))
# With several pytest workers on few cores, one torch thread each: OpenMP spin-waiting otherwise makes
# small-tensor work 10-100x slower.
ONE_THREAD := $(if $(filter-out 1,$(JOBS)),OMP_NUM_THREADS=1 LMCOURSE_THREADS=1)

# Offline course data: when no mirror is set and ../shared/data exists (as beside a CI checkout), use it.
ifeq ($(origin LMCOURSE_DATA_MIRROR), undefined)
ifneq ($(wildcard ../shared/data/README.md),)
export LMCOURSE_DATA_MIRROR := $(abspath ../shared/data)
endif
endif

.PHONY: help venv book test lint unit nbval book-check mathjax bench assignments grade lab clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,book]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)  ## create or update .venv (the package, tests and book tools)

$(MATHJAX):
	rm -rf .build/mathjax && mkdir -p .build/mathjax .build/assets
	cd .build/mathjax && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null && tar xzf mathjax-$(MATHJAX_VERSION).tgz
	rm -rf .build/assets/mathjax && cp -r .build/mathjax/package/es5 .build/assets/mathjax

mathjax: $(MATHJAX)  ## copy MathJax into the site so that math renders offline

book: $(STAMP) $(MATHJAX)  ## build the HTML book, executing every notebook (cached) -> _build/html
	$(VENV)/bin/jupyter-book build . --builder html -W -n --keep-going

test: lint unit nbval book-check  ## everything CI runs

lint: $(STAMP)  ## ruff over the package, tests and notebooks
	$(VENV)/bin/ruff check .

unit: $(STAMP)  ## the package tests
	$(ONE_THREAD) $(PY) -m pytest -n $(JOBS) -m "not book" tests

nbval: $(STAMP)  ## execute every notebook under nbval, JOBS at a time (1 thread each if JOBS > 1)
	$(ONE_THREAD) $(PY) -m pytest --nbval-lax --nbval-cell-timeout=$(CELL_TIMEOUT) \
	  -n $(JOBS) --dist loadfile --no-loadscope-reorder $(NOTEBOOKS)

book-check: $(STAMP) $(MATHJAX)  ## build the book from nbval's outputs without executing, -W -n, and check it in Chromium
	$(PY) book/stage.py .build/book-src
	$(PY) -c "import yaml; c = yaml.safe_load(open('_config.yml')); c['execute']['execute_notebooks'] = 'off'; \
	  yaml.safe_dump(c, open('.build/_config_check.yml', 'w'))"
	rm -rf .build/check
	$(VENV)/bin/jupyter-book build .build/book-src --config .build/_config_check.yml --path-output .build/check \
	  --builder html -W -n --keep-going --quiet
	LMCOURSE_BOOK_HTML=.build/check/_build/html $(PY) -m pytest -m book tests

bench: $(STAMP)  ## every peer benchmark, one process per pair -> book/benchmarks.md (BENCH_ARGS=--quick: a smoke run)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

assignments: $(STAMP)  ## build the graded assignments (student versions, solutions, tests) -> .build/assignments
	$(PY) assignments/build.py --out .build/assignments

grade: assignments  ## grade a folder of submitted notebooks: make grade SUBMISSIONS=folder -> .build/grades
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=<folder of notebooks>" >&2; exit 2; }
	$(PY) assignments/grade.py $(SUBMISSIONS) --out .build/grades --built .build/assignments --jobs $(JOBS)

lab: $(STAMP)  ## open JupyterLab on the notebooks
	$(PY) -m pip install --quiet -c constraints.txt -e ".[lab]"
	$(VENV)/bin/jupyter lab notebooks

clean:  ## remove build outputs (keeps .venv)
	rm -rf _build .build
