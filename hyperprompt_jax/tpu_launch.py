"""`python -m hyperprompt_jax.tpu_launch`: runs `hyperprompt_jax.tools.tpu_launch`."""

import runpy

if __name__ == '__main__':
  runpy.run_module('hyperprompt_jax.tools.tpu_launch', run_name='__main__',
                   alter_sys=True)
