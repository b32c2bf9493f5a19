"""`python -m hyperprompt_jax.resume_bench`: runs `hyperprompt_jax.tools.resume_bench`."""

import runpy

if __name__ == '__main__':
  runpy.run_module('hyperprompt_jax.tools.resume_bench', run_name='__main__',
                   alter_sys=True)
