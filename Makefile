# HyperPrompt-JAX. `make test` and `make train` install what they need first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TEST_WORKERS ?= 2
MODEL_DIR ?= /tmp/hyperprompt_jax/synthetic_global_tiny

.PHONY: install test train bench compare plan t5x clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

train: install
	$(PY) -m hyperprompt_jax.train --gin_file=gin/runs/synthetic_global_tiny.gin --gin.MODEL_DIR="'$(MODEL_DIR)'"

bench: install
	$(PY) -m hyperprompt_jax.bench --size=tiny
	$(PY) -m hyperprompt_jax.bench --size=d256
	$(PY) -m hyperprompt_jax.t5x_bench --size=tiny
	$(PY) -m hyperprompt_jax.t5x_bench --size=d256
	$(PY) -m hyperprompt_jax.resume_bench

compare: install
	$(PY) -m hyperprompt_jax.compare

# Per-chip memory, FLOPs and step-time bound of the train step of every TPU
# run file, compiled for the slice it names (libtpu; no TPU needed), e.g.
#   make plan PLAN_RUNS=gin/tpu/base_global_v5e_8.gin PLAN_FLAGS=--output=plan.json
# libtpu (the [tpu] extra of setup.py) goes to a folder of its own that only
# the plan imports: installed in the venv, it makes every JAX program on a
# host without TPUs write libtpu's warnings to stderr.
PLAN_RUNS ?= $(sort $(wildcard gin/tpu/*.gin))
PLAN_FLAGS ?=
LIBTPU_DIR := $(VENV)/libtpu-0.0.42
plan: install $(LIBTPU_DIR)/.installed
	PYTHONPATH=$(LIBTPU_DIR) $(PY) -m hyperprompt_jax.plan \
	  $(foreach r,$(PLAN_RUNS),--run=$(r)) $(PLAN_FLAGS)

$(LIBTPU_DIR)/.installed:
	$(PY) -m pip install --quiet --target $(LIBTPU_DIR) 'libtpu==0.0.42.*'
	touch $@

# t5x, airio and jestimator are not on PyPI: pinned commits of their git
# repositories, or local copies where no git host is reachable, e.g.
#   make t5x T5X_SRC=/src/t5x AIRIO_SRC=/src/airio JESTIMATOR_SRC=/src/jestimator
T5X_SRC ?= git+https://github.com/google-research/t5x@cc342d419ec3e3e9c4bf1df33c82330cafdc1e16
AIRIO_SRC ?= git+https://github.com/google/airio@69897df7d9a427b947a9f7bb4164c7782b43e601
JESTIMATOR_SRC ?= git+https://github.com/google-research/jestimator@326824a477feef6d92e6f44175000907a72899ca

# --no-deps: their setup.py files pull flax, optax, clu and seqio from git
# heads, which would replace the tested pins of requirements.txt.
t5x: install
	$(PY) -m pip install --quiet --no-deps $(T5X_SRC) $(AIRIO_SRC) $(JESTIMATOR_SRC)
	$(PY) -m pip install --quiet --no-deps -r requirements-t5x.txt
	$(PY) -c "import t5x.train, airio, jestimator; print('t5x is installed; make test now runs the t5x tests too')"

clean:
	rm -rf $(VENV) build *.egg-info
