"""gin flags shared by the train and infer entry points (t5x conventions).

`--gin_file` (repeatable), `--gin.KEY=VALUE` (repeatable, rewritten to a gin
binding `KEY = VALUE`) and `--gin_search_paths` (comma separated). The repo's
own `gin/` directory is always searchable, so `--gin_file=runs/x.gin` and
`include 'models/t5_1_1_tiny.gin'` work from any working directory.
"""

import argparse
import contextlib
import difflib
import logging
import os
import pathlib
import re
import signal
import sys
import threading
import traceback
import warnings
from typing import Any, Iterator, Sequence

import gin

from hyperprompt_jax import errors

# The gin files ship inside the package (hyperprompt_jax/gin of an installed
# wheel); a checkout or an editable install reads the repository's gin/.
DEFAULT_GIN_DIR = pathlib.Path(__file__).resolve().parent / 'gin'
if not DEFAULT_GIN_DIR.is_dir():
  DEFAULT_GIN_DIR = DEFAULT_GIN_DIR.parent.parent / 'gin'

# Modules that a run's saved config.gin imports, from where they stood before
# the package had sub-packages: importing them under their old names keeps
# such a run's bindings (`model.EncoderDecoderModel...`) readable.
_MOVED_MODULES = {
    'checkpoints': 'hyperprompt_jax.checkpointing.checkpoints',
    'data': 'hyperprompt_jax.data.pipeline',
    'feature_converter': 'hyperprompt_jax.data.feature_converter',
    'hyperprompt_config': 'hyperprompt_jax.conditioning.hyperprompt_config',
    'mesh': 'hyperprompt_jax.sharding.mesh',
    'model': 'hyperprompt_jax.model.encoder_decoder',
    'network': 'hyperprompt_jax.model.network',
    'optimizers': 'hyperprompt_jax.training.optimizers',
    'partitioning': 'hyperprompt_jax.sharding.partitioning',
    'train_loop': 'hyperprompt_jax.training.train_loop',
    'trainer': 'hyperprompt_jax.training.trainer',
}


def _not_search_path_miss(record: logging.LogRecord) -> bool:
  # gin logs an error for every search path that lacks a file before it tries
  # the next one; only a file missing from all of them is a real error, and
  # that one raises.
  return not str(record.msg).startswith('Path not found:')


class GinConfigError(ValueError):
  """A gin file or binding that cannot be parsed; the message is one line."""


def command_parser(command: str, doc: str) -> argparse.ArgumentParser:
  """The parser of `python -m hyperprompt_jax.<command>`.

  Args:
    command: the module name after `hyperprompt_jax.`, e.g. 'train'.
    doc: the command module's docstring; --help shows it as written (its
      usage examples keep their line breaks).
  """
  return argparse.ArgumentParser(
      prog=f'python -m hyperprompt_jax.{command}', description=doc,
      formatter_class=argparse.RawDescriptionHelpFormatter)


def add_gin_flags(parser: argparse.ArgumentParser, gin_file_help: str,
                  of_every_run: str = '') -> None:
  """--gin_file, --gin_bindings (and its --gin.KEY=VALUE form, see
  `rewrite_gin_args`) and --gin_search_paths, as t5x's commands take them."""
  parser.add_argument('--gin_file', action='append', default=[],
                      help=gin_file_help)
  parser.add_argument('--gin_bindings', action='append', default=[],
                      help=f'gin binding{of_every_run} (repeatable); '
                      '--gin.KEY=VALUE is the short form')
  parser.add_argument('--gin_search_paths', default='',
                      help='comma-separated directories searched for gin files')


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


def _macro_references(value: Any) -> Iterator[str]:
  """Names of the macros (`%NAME`) that a bound value refers to."""
  for reference in gin.config.iterate_references(value):
    if reference.selector == 'gin.macro':
      yield reference.scoped_selector.rpartition('/')[0]


def check_macro_bindings(bindings: Sequence[str]) -> None:
  """Raises GinConfigError for a bound macro that no configuration reads.

  gin accepts `--gin.LEARNIN_RATE=1` as a new macro that nothing uses, and
  the run would silently train with the default; close matches are named.
  """
  # gin keeps the parsed bindings only in this private dict: scope and
  # selector -> {argument: value}; a macro `NAME` is ('NAME', 'gin.macro').
  config = gin.config._CONFIG  # pylint: disable=protected-access
  defined = sorted(scope for scope, selector in config
                   if selector == 'gin.macro')
  used = {name for arguments in config.values()
          for value in arguments.values()
          for name in _macro_references(value)}
  for binding in bindings:
    name = binding.partition('=')[0].strip()
    if not name.isidentifier() or name in used:
      continue  # A configurable's parameter, or a macro that is read.
    close = difflib.get_close_matches(name, [d for d in defined if d != name],
                                      n=3, cutoff=0.6)
    hint = f'close matches: {", ".join(close)}' if close else (
        'no macro of that name is used by the gin files')
    raise GinConfigError(f'--gin.{name} sets a macro that no gin file reads '
                         f'({hint}); check its spelling')


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str],
              search_paths: Sequence[str] = ()) -> None:
  """Parses gin files then bindings; any failure becomes a `GinConfigError`.

  Args:
    gin_files: paths, absolute or relative to a search path.
    bindings: gin binding lines, e.g. "TRAIN_STEPS = 100".
    search_paths: directories searched for gin files (and includes), before
      `.` and the repo's `gin/` directory; they replace those of any earlier
      parse in this process.
  """
  # gin keeps search paths for the whole process and searches them in the
  # order added: a later parse in the same process (another run, a Predictor)
  # must search its own paths, not first those an earlier parse added.
  gin.config._LOCATION_PREFIXES[:] = ['']  # pylint: disable=protected-access
  for path in [*search_paths, '.', str(DEFAULT_GIN_DIR)]:
    gin.add_config_file_search_path(path)
  logging.getLogger().addFilter(_not_search_path_miss)
  try:
    gin.parse_config_files_and_bindings(
        list(gin_files), list(bindings), finalize_config=False)
  except (IOError, ValueError, SyntaxError, ImportError, KeyError) as e:
    raise GinConfigError(
        f'bad gin configuration ({type(e).__name__}: {errors.first_line(e)}); '
        'check --gin_file paths (searched: '
        f"{', '.join([*search_paths, str(DEFAULT_GIN_DIR)])}) and "
        '--gin.KEY=VALUE bindings (strings need inner quotes: '
        "--gin.MODEL_DIR=\"'/tmp/run'\")") from e
  check_macro_bindings(bindings)


def parse_run_config(text: str, path: str) -> None:
  """Parses the `config.gin` a run saved (`text`, read from `path`).

  Configs saved before the package had sub-packages import modules by their
  old names; those imports are redirected to where the modules stand now.
  """
  def redirect(m):
    module = _MOVED_MODULES.get(m.group(1))
    if module is None:
      return m.group(0)
    package, name = module.rsplit('.', 1)
    return f'from {package} import {name} as {m.group(1)}'

  text = re.sub(r'^from hyperprompt_jax import (\w+)$', redirect, text,
                flags=re.M)
  try:
    gin.parse_config(text)
    missing = [name for name in ('model', 'train_dataset_cfg')
               if name not in gin.get_bindings('train_loop.train')]
  except (ValueError, SyntaxError, ImportError, KeyError) as e:
    problem = f'{type(e).__name__}: {errors.first_line(e)}'
  else:
    problem = (f"it binds no train_loop.train.{', '.join(missing)}"
               if missing else None)
  if problem:
    raise GinConfigError(
        f'unreadable run config {path} ({problem}): pass the MODEL_DIR of a '
        'training run; if it is one, its config.gin is damaged: restore it '
        "from a copy, or run train once more with the run's gin files (it "
        'rewrites config.gin at the start)')


@contextlib.contextmanager
def isolated_config() -> Iterator[None]:
  """Runs the block on an empty gin config, then gives the caller's back.

  gin has one config per process: reading a run's `config.gin` (as
  `infer.Predictor` does) would otherwise replace whatever the calling
  program had bound. gin has no public snapshot, so its module state is
  saved and restored: bindings, imports, operative config, search paths and
  lock (constants survive `gin.clear_config` by themselves).
  """
  # pylint: disable=protected-access
  state = gin.config
  saved = ({k: dict(v) for k, v in state._CONFIG.items()},
           dict(state._SINGLETONS), set(state._IMPORTS),
           {k: dict(v) for k, v in state._OPERATIVE_CONFIG.items()},
           list(state._LOCATION_PREFIXES), gin.config_is_locked())
  gin.clear_config()
  try:
    yield
  finally:
    gin.clear_config()
    config, singletons, imports, operative, prefixes, locked = saved
    state._CONFIG.update(config)
    state._SINGLETONS.update(singletons)
    state._IMPORTS.update(imports)
    state._OPERATIVE_CONFIG.update(operative)
    state._LOCATION_PREFIXES[:] = prefixes
    state._set_config_is_locked(locked)
  # pylint: enable=protected-access


def _raised_by_own_code(e: BaseException) -> bool:
  """Whether a `raise` statement of this project raised `e`.

  Errors from inside libraries (e.g. a shape error in a jitted step) keep
  their traceback; only the project's own checks become one line. JAX may
  drop its internal frames from the traceback, leaving the project's call
  site last: that line is a call, not a `raise`.
  """
  frames = traceback.extract_tb(e.__traceback__)
  if not frames or not (frames[-1].line or '').startswith('raise'):
    return False
  own = [pathlib.Path(__file__).resolve().parent]
  if 'hyperprompt_jax.tasks' in sys.modules:
    own.append(pathlib.Path(sys.modules['hyperprompt_jax.tasks'].__file__
                            ).resolve().parent)
  where = pathlib.Path(frames[-1].filename).resolve()
  return any(where.is_relative_to(d) for d in own)


def _quiet_python_logs() -> None:
  """absl, TensorFlow's Python logs and Python warnings stay quiet, but for
  TensorFlow's errors."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  # Libraries log the errors they raise (orbax with tracebacks from its
  # threads); the command says what went wrong in its own line.
  absl_logging.set_verbosity(absl_logging.FATAL)
  logging.getLogger('tensorflow').setLevel(logging.ERROR)
  warnings.filterwarnings('ignore')


def run_main(main) -> None:
  """Runs `main(sys.argv[1:])` as a command.

  The command prints only its own lines unless `--verbose` is given (it is
  taken out of the arguments here). The project's own errors for bad input
  exit with one `error: ...` line; a preempted or interrupted run prints one
  line and exits with its code (`preemption.Preempted.exit_code`); Ctrl-C
  anywhere else (set-up, compiling, a second Ctrl-C in training) prints one
  line and exits with `errors.INTERRUPTED_EXIT_CODE` at once.
  """
  main_thread = threading.current_thread() is threading.main_thread()
  if main_thread:
    previous = signal.signal(signal.SIGINT, errors.stop_at_once)
  try:
    _run_main(main)
  except KeyboardInterrupt:  # From code that raises it itself.
    errors.stop_at_once()
  finally:
    if main_thread:  # As it was, for a caller in the same process.
      signal.signal(signal.SIGINT, previous)


def _run_main(main) -> None:
  from hyperprompt_jax.checkpointing import checkpoints  # pylint: disable=g-import-not-at-top
  from hyperprompt_jax.training import preemption  # pylint: disable=g-import-not-at-top
  argv = sys.argv[1:]
  if '--verbose' in argv:
    argv.remove('--verbose')
  else:
    _quiet_python_logs()
  try:
    main(argv)
  except preemption.Preempted as e:
    print(e, flush=True)
    sys.exit(e.exit_code)
  except checkpoints.CheckpointSaveError as e:
    print(f'error: {errors.first_line(e, max_chars=None)}', file=sys.stderr,
          flush=True)
    sys.exit(errors.SAVE_FAILED_EXIT_CODE)
  except (GinConfigError, checkpoints.CheckpointError, FloatingPointError,
          ValueError, OSError) as e:
    if not _raised_by_own_code(e):
      raise
    sys.exit(f'error: {errors.first_line(e, max_chars=None)}')
