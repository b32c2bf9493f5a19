"""HyperPrompt-JAX: HyperPrompt task conditioning for T5.1.1 in JAX/Flax."""

import os
import sys


def _import_tensorflow_quietly() -> None:
  """Imports TensorFlow with the process's stderr closed for the while.

  Its CUDA probe writes to stderr while it loads, before any log level
  applies; Python errors of the import still surface as exceptions.
  """
  saved = os.dup(2)
  try:
    with open(os.devnull, 'w') as devnull:
      os.dup2(devnull.fileno(), 2)
      import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  finally:
    os.dup2(saved, 2)
    os.close(saved)


# `python -m hyperprompt_jax.<command>` (sys.argv[0] is '-m' while Python
# locates the module) or its console script `hyperprompt-<command>` is
# starting: keep the C++ logs of TensorFlow and XLA (CUDA
# probes, kernel warnings) out of the command's output unless --verbose asks
# for them (whatever TF_CPP_MIN_LOG_LEVEL says: TensorFlow itself sets it to 1
# in the environment that subprocesses inherit). This must happen before
# anything imports TensorFlow; importing the package as a library changes
# nothing. (tpu_launch only drives gcloud.)
_ARGV0 = os.path.basename(sys.argv[0]) if sys.argv else ''
if ((_ARGV0 == '-m' or _ARGV0.startswith('hyperprompt-'))
    and '--verbose' not in sys.argv
    and 'hyperprompt_jax.tpu_launch' not in sys.orig_argv
    and _ARGV0 != 'hyperprompt-tpu-launch'):
  os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
  _import_tensorflow_quietly()
