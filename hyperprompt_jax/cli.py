"""Console scripts: `hyperprompt-<name>` runs `python -m hyperprompt_jax.<name>`.

setup.py names the commands; each entry point is `hyperprompt_jax.cli:<name>`.
"""

import runpy


def __getattr__(name: str):
  if name.startswith('_'):
    raise AttributeError(name)

  def run() -> None:
    runpy.run_module(f'hyperprompt_jax.{name}', run_name='__main__',
                     alter_sys=True)
  return run
