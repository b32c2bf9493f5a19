# HyperPrompt-JAX. `make test` and `make train` install what they need first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_DIR ?= /tmp/hyperprompt_jax/synthetic_global_tiny

.PHONY: install test train bench compare clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

test: install
	$(PY) -m pytest -q tests

train: install
	$(PY) -m hyperprompt_jax.train --gin_file=gin/runs/synthetic_global_tiny.gin --gin.MODEL_DIR="'$(MODEL_DIR)'"

bench: install
	$(PY) -m hyperprompt_jax.bench
	$(PY) -m hyperprompt_jax.resume_bench

compare: install
	$(PY) -m hyperprompt_jax.compare

clean:
	rm -rf $(VENV) build *.egg-info
