"""Stopping at a saved step when the machine is taken away or Ctrl-C is hit.

Spot and preemptible VMs, and batch schedulers, send SIGTERM some seconds
before they kill a job; a user in a terminal sends SIGINT (Ctrl-C). The
trainer asks `Watcher.reached(step)` after every step; once it is true, the
trainer saves that step and exits with `Watcher.exit_code` (`EXIT_CODE`
after SIGTERM, `errors.INTERRUPTED_EXIT_CODE` after Ctrl-C), and running the
same command again resumes from it. A second Ctrl-C does what Ctrl-C did
before: the commands' handler stops at once (`gin_utils.run_main`), Python's
raises KeyboardInterrupt; checkpoints already saved stay as they are.

Multi-process runs rely on JAX's preemption sync point: the distributed
runtime catches SIGTERM on every host and names one step at which all
processes stop; Ctrl-C on one process is passed to it as SIGTERM. A single
process catches both signals itself.
"""

import os
import signal
import threading

import jax

from hyperprompt_jax import errors

# sysexits.h EX_TEMPFAIL: a temporary failure, the same command may be retried.
EXIT_CODE = 75


class Preempted(Exception):
  """Training stopped early at a saved step; run the same command again.

  Attributes:
    exit_code: the command's exit code.
  """

  def __init__(self, message: str, exit_code: int = EXIT_CODE):
    super().__init__(message)
    self.exit_code = exit_code


class Watcher:
  """Whether training should stop now (context manager).

  Args:
    reached_sync_point: step -> whether all processes reached JAX's
      preemption sync point (e.g. `Checkpointer.reached_preemption`).
  """

  def __init__(self, reached_sync_point):
    self._reached_sync_point = reached_sync_point
    self._signals: list[int] = []
    self._previous = {}

  def __enter__(self) -> 'Watcher':
    # Only the main thread may set handlers; with several processes JAX's
    # own SIGTERM handler must stay in place, or the processes would not
    # agree on the step.
    if threading.current_thread() is threading.main_thread():
      ours = [signal.SIGINT]
      if jax.process_count() == 1:
        ours.append(signal.SIGTERM)
      for signum in ours:
        self._previous[signum] = signal.signal(signum, self._on_signal)
    return self

  def __exit__(self, *exc) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}

  def _on_signal(self, signum, frame) -> None:
    if signum == signal.SIGINT and signal.SIGINT in self._signals:
      # A second Ctrl-C does what Ctrl-C did before: stop at once.
      previous = self._previous[signal.SIGINT]
      if callable(previous):
        previous(signum, frame)
      raise KeyboardInterrupt
    self._signals.append(signum)
    if signum == signal.SIGINT and jax.process_count() > 1:
      os.kill(os.getpid(), signal.SIGTERM)  # To JAX's sync point.

  @property
  def exit_code(self) -> int:
    """The code to exit with once stopped: Ctrl-C's if it came first."""
    if self._signals[:1] == [signal.SIGINT]:
      return errors.INTERRUPTED_EXIT_CODE
    return EXIT_CODE

  @property
  def cause(self) -> str:
    return 'Interrupted' if self.exit_code != EXIT_CODE else 'Preempted'

  def reached(self, step: int) -> bool:
    """Whether to save `step` and stop (a signal received or sync point)."""
    return bool(self._signals) or self._reached_sync_point(step)
