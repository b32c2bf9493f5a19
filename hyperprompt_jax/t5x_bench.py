"""`python -m hyperprompt_jax.t5x_bench`: runs `hyperprompt_jax.tools.t5x_bench`."""

import runpy

if __name__ == '__main__':
  runpy.run_module('hyperprompt_jax.tools.t5x_bench', run_name='__main__',
                   alter_sys=True)
