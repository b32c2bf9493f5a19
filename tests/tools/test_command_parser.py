"""Every command's parser: its name and its module docstring as written."""

import contextlib
import importlib
import io

import pytest

from hyperprompt_jax import gin_utils

COMMANDS = ('hyperprompt_jax.train', 'hyperprompt_jax.infer',
            'hyperprompt_jax.export_hf', 'hyperprompt_jax.convert_checkpoint',
            'hyperprompt_jax.tools.bench', 'hyperprompt_jax.tools.plan',
            'hyperprompt_jax.tools.compare',
            'hyperprompt_jax.tools.resume_bench',
            'hyperprompt_jax.tools.t5x_bench')


def test_help_keeps_the_docstrings_line_breaks():
  doc = 'Does a thing.\n\n  python -m hyperprompt_jax.thing \\\n    --flag=1\n'
  parser = gin_utils.command_parser('thing', doc)
  assert parser.prog == 'python -m hyperprompt_jax.thing'
  assert doc in parser.format_help()


@pytest.mark.parametrize('module', COMMANDS)
def test_help_names_the_command_and_shows_its_docstring(module):
  command = importlib.import_module(module)
  help_text = io.StringIO()
  with contextlib.redirect_stdout(help_text), pytest.raises(SystemExit):
    command.parse_args(['--help'])
  name = module.rpartition('.')[2]
  assert help_text.getvalue().startswith(
      f'usage: python -m hyperprompt_jax.{name} ')
  assert command.__doc__.strip() in help_text.getvalue()
