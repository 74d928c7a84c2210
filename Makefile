# maelib: one entry point for people and CI.
#
#   make run     install everything (first time only), get Fashion-MNIST, run the notebook suite
#   make test    install everything (first time only), get Fashion-MNIST, run the tests
#   make lab     JupyterLab on notebooks/
#   make site    the course website of the executed notebooks (after make run), into runs/site
#
# Everything is installed into ./.venv; nothing outside it is touched, except that
# `make data` installs the Debian package dataset-fashion-mnist when run as root.

SHELL := /bin/bash

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
EXTRAS      ?= test
STAMP       := $(VENV)/.installed
PIP_FLAGS   ?= $(if $(CI),--progress-bar off,)
PYTEST_ARGS ?=
RUN_ARGS    ?=
RUN_CMD     ?= $(PY) -m maelib.course.suite $(RUN_ARGS)
SITE_ARGS   ?=
LAB_ARGS    ?=
# JupyterLab refuses to start as root without --allow-root (containers, CI machines).
LAB_ROOT    := $(if $(filter 0,$(shell id -u)),--allow-root,)

FASHION_MNIST_DEB_DIR := /usr/share/datasets/fashion-mnist
FASHION_MNIST_FILES   := train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz \
                         t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz

.DEFAULT_GOAL := help
.PHONY: help venv install data browser test run site demo strip lab clean distclean

help:
	@echo "make run        install (first time), fetch data, run the notebook suite into runs/suite"
	@echo "                (parameters: make run RUN_ARGS='-p epochs 3 -p 05:pool mean --out runs/mine')"
	@echo "make site       the course website of what make run executed, into runs/site (offline; then"
	@echo "                python -m http.server -d runs/site)"
	@echo "make demo       a one-minute pretraining demo with reconstruction figures (runs/demo)"
	@echo "make strip      strip notebook outputs before committing"
	@echo "make test       install (first time), fetch data, run the test suite"
	@echo "make lab        start JupyterLab in notebooks/"
	@echo "make install    create $(VENV) and pip install -e '.[$(EXTRAS)]'"
	@echo "make data       install Fashion-MNIST (Debian package) if it is missing"
	@echo "make browser    install Chromium (Debian package) for the browser test if it is missing"
	@echo "make clean      remove runs/ and caches (keeps $(VENV))"
	@echo "make distclean  clean, and remove $(VENV) too"

venv: $(PY)

$(PY):
	@echo ">> creating $(VENV) with $(PYTHON)"
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "maelib needs Python >= 3.10, $(PYTHON) is " + sys.version.split()[0] + "; run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)

install: $(STAMP)

# Re-runs pip only when pyproject.toml changes (or the venv was created anew).
# The torch / torchvision versions come from the ranges in pyproject.toml.
$(STAMP): pyproject.toml | $(PY)
	@echo ">> installing maelib[$(EXTRAS)] into $(VENV) (the first time takes a few minutes)"
	$(PIP) install $(PIP_FLAGS) -e ".[$(EXTRAS)]"
	@$(PY) -c 'import torch, torchvision, timm, lightning; print(">> torch", torch.__version__, "| torchvision", torchvision.__version__, "| timm", timm.__version__, "| lightning", lightning.__version__, "| cuda:", torch.cuda.is_available())'
	@touch $@

data:
	@set -u; \
	have() { for f in $(FASHION_MNIST_FILES); do [ -f "$$1/$$f" ] || return 1; done; }; \
	if [ -n "$${MAELIB_FASHION_MNIST:-}" ] && have "$$MAELIB_FASHION_MNIST"; then \
		echo ">> Fashion-MNIST: using MAELIB_FASHION_MNIST=$$MAELIB_FASHION_MNIST"; exit 0; \
	fi; \
	if have "$(FASHION_MNIST_DEB_DIR)"; then \
		echo ">> Fashion-MNIST: found in $(FASHION_MNIST_DEB_DIR)"; exit 0; \
	fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo ">> Fashion-MNIST: installing the Debian package dataset-fashion-mnist"; \
		export DEBIAN_FRONTEND=noninteractive; \
		if apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null && have "$(FASHION_MNIST_DEB_DIR)"; then \
			echo ">> Fashion-MNIST: installed in $(FASHION_MNIST_DEB_DIR)"; exit 0; \
		fi; \
		echo ">> Fashion-MNIST: apt-get could not install dataset-fashion-mnist"; \
	fi; \
	echo ">> Fashion-MNIST was not found. To provide it, do one of:"; \
	echo "     - on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist  (files go to $(FASHION_MNIST_DEB_DIR))"; \
	echo "     - set MAELIB_FASHION_MNIST to a folder holding the 4 IDX files:"; \
	echo "         $(FASHION_MNIST_FILES)"; \
	echo "     - or, with internet access, let torchvision download it the first time it is needed."; \
	echo ">> continuing without it"

# The browser test (tests/test_browser.py) drives JupyterLab with the system's Chromium.
browser:
	@set -u; \
	for b in chromium chromium-browser google-chrome; do \
		if command -v $$b >/dev/null 2>&1; then echo ">> browser test: using $$(command -v $$b)"; exit 0; fi; \
	done; \
	if [ "$${MAELIB_SKIP_BROWSER:-}" = 1 ]; then echo ">> browser test: left out (MAELIB_SKIP_BROWSER=1)"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo ">> browser test: installing the Debian package chromium"; \
		export DEBIAN_FRONTEND=noninteractive; \
		if apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; then \
			echo ">> browser test: installed $$(command -v chromium)"; exit 0; \
		fi; \
		echo ">> browser test: apt-get could not install chromium"; \
	fi; \
	echo ">> browser test: no Chromium found. Install it (Debian/Ubuntu: sudo apt-get install chromium)"; \
	echo "   or run the tests with MAELIB_SKIP_BROWSER=1 to leave the browser test out (it fails otherwise)."

test: install data browser
	@echo ">> running the tests"
	$(PY) -m pytest $(PYTEST_ARGS)

run: install data
	@echo ">> running the notebook suite headless: $(RUN_CMD)"
	$(RUN_CMD)

# The website of the notebooks as `make run` executed them (nothing re-executed): scripts/build_site.py.
site: install
	$(PY) scripts/build_site.py $(SITE_ARGS)

demo: install data
	$(PY) -m maelib.course.demo

strip:
	$(PY) scripts/strip_notebooks.py $(wildcard notebooks/*.ipynb notebooks/sweeps/*.ipynb)

lab: install
	@echo ">> starting JupyterLab in notebooks/ (Ctrl-C to stop)"
	$(VENV)/bin/jupyter lab --notebook-dir="$(CURDIR)/notebooks" $(LAB_ROOT) $(LAB_ARGS)

clean:
	@echo ">> removing runs/ and caches"
	rm -rf runs lightning_logs .pytest_cache .hypothesis .ruff_cache build dist *.egg-info
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -print0 | xargs -0 -r rm -rf

distclean: clean
	@echo ">> removing $(VENV)"
	rm -rf $(VENV)
