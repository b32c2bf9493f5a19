"""`python -m hyperprompt_jax.compare`: runs `hyperprompt_jax.tools.compare`."""

import runpy

if __name__ == '__main__':
  runpy.run_module('hyperprompt_jax.tools.compare', run_name='__main__',
                   alter_sys=True)
