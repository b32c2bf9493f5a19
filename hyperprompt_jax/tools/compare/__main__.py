"""Runs the comparison command (`python -m hyperprompt_jax.compare`)."""

from hyperprompt_jax import gin_utils
from hyperprompt_jax.tools import compare

if __name__ == '__main__':
  gin_utils.run_main(compare.main)
