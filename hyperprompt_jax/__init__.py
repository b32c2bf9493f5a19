"""HyperPrompt-JAX: HyperPrompt task conditioning for T5.1.1 in JAX/Flax."""

import os
import signal
import sys
import threading

from hyperprompt_jax import errors

# `python -m hyperprompt_jax.<command>` (sys.argv[0] is '-m' while Python
# locates the module) or its console script `hyperprompt-<command>` is
# starting; importing the package as a library changes nothing below.
_ARGV0 = os.path.basename(sys.argv[0]) if sys.argv else ''
_COMMAND = _ARGV0 == '-m' or _ARGV0.startswith('hyperprompt-')

# Ctrl-C while a command imports JAX and TensorFlow (seconds) ends with one
# line, as it does later (gin_utils.run_main).
if _COMMAND and threading.current_thread() is threading.main_thread():
  signal.signal(signal.SIGINT, errors.stop_at_once)

# Keep the C++ logs of TensorFlow and XLA (CUDA probes, kernel warnings) out
# of the command's output unless --verbose asks for them (whatever
# TF_CPP_MIN_LOG_LEVEL says: TensorFlow itself sets it to 1 in the
# environment that subprocesses inherit). This must happen before anything
# imports TensorFlow. (tpu_launch only drives gcloud.)
if (_COMMAND and '--verbose' not in sys.argv
    and 'hyperprompt_jax.tpu_launch' not in sys.orig_argv
    and _ARGV0 != 'hyperprompt-tpu-launch'):
  os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
  with errors.stderr_closed():  # TensorFlow's CUDA probe, while it loads.
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
