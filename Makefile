# medmaas_nb: `make run` and `make test` work on a fresh clone with Python 3.11.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PYTHONUNBUFFERED := 1
# the package of this checkout comes first (git worktrees may share one .venv)
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
# line and branch coverage of pytest's run (see .coveragerc); subprocesses write beside it
export COVERAGE_FILE := $(CURDIR)/.coverage

.PHONY: install run test test-notebooks test-sync test-py clean-runs docs lab

$(STAMP): setup.py settings.ini
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing medmaas_nb and its dependencies into $(VENV) (a few minutes the first time)"
	@$(BIN)/python -m pip install -qq --upgrade pip
	@$(BIN)/python -m pip install -qq -e '.[dev]'  # -qq: errors only, not the build backend's banners
	@touch $(STAMP)

install: $(STAMP)

## run every task whose data is available (full runs) and say where the reports are
run: install
	$(BIN)/medmaas run --all

## the whole check: export/clean in sync, notebook tests, pytest (unit, HTTP, CLI, quick pipeline runs of every task)
test: install test-sync test-notebooks test-py

test-sync: install
	$(BIN)/python tests/check_notebooks.py

test-notebooks: install
	$(BIN)/python tools/test_notebooks.py --n_workers 2

## pytest under coverage: the table of lines and branches run, per module, comes at the end
test-py: install
	rm -f .coverage .coverage.*
	$(BIN)/python -m coverage run -m pytest tests -ra --durations=25
	$(BIN)/python -m coverage combine -q
	$(BIN)/python -m coverage report

clean-runs:
	rm -rf runs registry mlruns

## the results table of README.md from the latest full runs, and the documentation site, offline, into site/
## (home, results, tutorials, API reference, latest report of each task; with search)
## (users with Quarto can still run nbdev_docs)
docs: install
	$(BIN)/python tools/results.py --readme
	$(BIN)/python tools/build_docs.py

## JupyterLab on 127.0.0.1 with this project's environment as the kernel, opening the learner's copies of the tutorials
## (solutions removed, in lab/tutorials/; the teacher's notebooks with solutions stay in nbs/tutorials/)
LAB_PORT ?= 8888
lab: install
	$(BIN)/python tools/student_notebooks.py --dest lab/tutorials
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) --ServerApp.root_dir=$(CURDIR) \
	  --LabApp.default_url=/lab/tree/lab/tutorials --LabApp.extension_manager=readonly $(if $(filter 0,$(shell id -u)),--allow-root)
