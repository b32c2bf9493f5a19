"""Stopping at a saved step when the machine is about to be taken away.

Spot and preemptible VMs, and batch schedulers, send SIGTERM some seconds
before they kill a job. The trainer asks `Watcher.reached(step)` after every
step; once it is true, the trainer saves that step and exits with
`EXIT_CODE`, and running the same command again resumes from it.

Multi-process runs rely on JAX's preemption sync point: the distributed
runtime catches SIGTERM on every host and names one step at which all
processes stop. A single process catches SIGTERM itself.
"""

import signal
import threading

import jax

# sysexits.h EX_TEMPFAIL: a temporary failure, the same command may be retried.
EXIT_CODE = 75


class Preempted(Exception):
  """Training stopped early at a saved step; run the same command again."""


class Watcher:
  """Whether training should stop now (context manager).

  Args:
    reached_sync_point: step -> whether all processes reached JAX's
      preemption sync point (e.g. `Checkpointer.reached_preemption`).
  """

  def __init__(self, reached_sync_point):
    self._reached_sync_point = reached_sync_point
    self._signalled = False
    self._previous = None

  def __enter__(self) -> 'Watcher':
    # Only the main thread may set handlers; with several processes JAX's
    # own handler must stay in place, or the processes would not agree.
    if (jax.process_count() == 1
        and threading.current_thread() is threading.main_thread()):
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _on_sigterm(self, signum, frame) -> None:
    del signum, frame
    self._signalled = True

  def reached(self, step: int) -> bool:
    """Whether to save `step` and stop (SIGTERM received or sync point)."""
    return self._signalled or self._reached_sync_point(step)
