"""`python -m hyperprompt_jax.plan`: runs `hyperprompt_jax.tools.plan`."""

import runpy

if __name__ == '__main__':
  runpy.run_module('hyperprompt_jax.tools.plan', run_name='__main__',
                   alter_sys=True)
