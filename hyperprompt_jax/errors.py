"""One-line errors: what they quote of the exception behind them, and the
exit codes of commands that stop early."""

import contextlib
import os
import re
import sys
from typing import Iterator, Optional

# 128 + SIGINT: what shells report for a command stopped by Ctrl-C.
INTERRUPTED_EXIT_CODE = 130
# sysexits.h EX_IOERR: a checkpoint could not be written (disk full,
# permission or quota); the same command resumes once that is fixed.
SAVE_FAILED_EXIT_CODE = 74
# Where `stop_at_once` writes: the process's stderr, also while
# `stderr_closed` points file descriptor 2 elsewhere.
stderr_fd = 2


def first_line(e: BaseException, max_chars: Optional[int] = 200) -> str:
  """The first line of `e`'s message (TensorFlow's own text for its errors,
  without the op context it appends), or `e`'s type name if it has none."""
  text = (getattr(e, 'message', None) or str(e)).strip()
  # TensorFlow prefixes op errors with the function they ran in.
  text = re.sub(r'^\{\{function_node [^}]*\}\}\s*', '', text)
  return text.splitlines()[0][:max_chars] if text else type(e).__name__


def stop_at_once(signum=None, frame=None) -> None:
  """A command's Ctrl-C handler outside training steps: one line, exit 130.

  At once, without unwinding: libraries log the exception of a wait it
  interrupts, and the interpreter's shutdown waits for (or crashes in) the
  threads of an XLA compile or a tf.data pipeline. Checkpoint saves are
  atomic, so a save cut short leaves only a temporary folder, which the
  next trainer removes.
  """
  del signum, frame
  sys.stdout.flush()
  sys.stderr.flush()
  os.write(stderr_fd, b'Interrupted (Ctrl-C): stopped at once; nothing saved '
           b'before was changed\n')
  os._exit(INTERRUPTED_EXIT_CODE)


@contextlib.contextmanager
def stderr_closed() -> Iterator[None]:
  """File descriptor 2 points to /dev/null for the while: C++ libraries
  (TensorFlow's CUDA probe, libtpu, XLA) write logs there that no log level
  reaches. Python errors still surface as exceptions."""
  global stderr_fd
  sys.stderr.flush()
  saved = stderr_fd = os.dup(2)
  try:
    with open(os.devnull, 'w') as devnull:
      os.dup2(devnull.fileno(), 2)
      yield
  finally:
    os.dup2(saved, 2)
    stderr_fd = 2
    os.close(saved)
