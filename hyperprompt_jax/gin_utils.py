"""gin flags shared by the train and infer entry points (t5x conventions).

`--gin_file` (repeatable), `--gin.KEY=VALUE` (repeatable, rewritten to a gin
binding `KEY = VALUE`) and `--gin_search_paths` (comma separated). The repo's
own `gin/` directory is always searchable, so `--gin_file=runs/x.gin` and
`include 'models/t5_1_1_tiny.gin'` work from any working directory.
"""

import logging
import pathlib
import sys
from typing import Sequence

import gin

# <repo>/gin when running from a checkout or an editable install.
DEFAULT_GIN_DIR = pathlib.Path(__file__).resolve().parent.parent / 'gin'


def _not_search_path_miss(record: logging.LogRecord) -> bool:
  # gin logs an error for every search path that lacks a file before it tries
  # the next one; only a file missing from all of them is a real error, and
  # that one raises.
  return not str(record.msg).startswith('Path not found:')


class GinConfigError(ValueError):
  """A gin file or binding that cannot be parsed; the message is one line."""


def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
  """Turns `--gin.KEY=VALUE` into `--gin_bindings=KEY = VALUE`."""
  out = []
  for arg in argv:
    if arg.startswith('--gin.'):
      key, sep, value = arg[len('--gin.'):].partition('=')
      if not sep:
        raise GinConfigError(
            f'bad gin flag {arg!r}: write --gin.KEY=VALUE, e.g. '
            "--gin.MODEL_DIR=\"'/tmp/run'\"")
      arg = f'--gin_bindings={key} = {value}'
    out.append(arg)
  return out


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str],
              search_paths: Sequence[str] = ()) -> None:
  """Parses gin files then bindings; any failure becomes a `GinConfigError`.

  Args:
    gin_files: paths, absolute or relative to a search path.
    bindings: gin binding lines, e.g. "TRAIN_STEPS = 100".
    search_paths: extra directories searched for gin files (and includes),
      before the repo's `gin/` directory.
  """
  for path in [*search_paths, '.', str(DEFAULT_GIN_DIR)]:
    gin.add_config_file_search_path(path)
  logging.getLogger().addFilter(_not_search_path_miss)
  try:
    gin.parse_config_files_and_bindings(
        list(gin_files), list(bindings), finalize_config=False)
  except (IOError, ValueError, SyntaxError, ImportError, KeyError) as e:
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else ''
    raise GinConfigError(
        f'bad gin configuration ({type(e).__name__}: {first_line}); check '
        '--gin_file paths (searched: '
        f"{', '.join([*search_paths, str(DEFAULT_GIN_DIR)])}) and "
        '--gin.KEY=VALUE bindings (strings need inner quotes: '
        "--gin.MODEL_DIR=\"'/tmp/run'\")") from e


def run_main(main) -> None:
  """Runs `main(sys.argv[1:])`; known user errors exit with one line."""
  from hyperprompt_jax import checkpoints  # pylint: disable=g-import-not-at-top
  try:
    main(sys.argv[1:])
  except (GinConfigError, checkpoints.CheckpointError, FloatingPointError,
          ValueError, FileNotFoundError) as e:
    message = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
    sys.exit(f'error: {message}')
