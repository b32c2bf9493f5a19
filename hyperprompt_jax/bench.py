"""`python -m hyperprompt_jax.bench`: runs `hyperprompt_jax.tools.bench`."""

import runpy

if __name__ == '__main__':
  runpy.run_module('hyperprompt_jax.tools.bench', run_name='__main__',
                   alter_sys=True)
