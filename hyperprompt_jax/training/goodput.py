"""Where a run's wall time goes: train steps (goodput) and the rest (badput).

The train loop times each of its phases into one part:

  train_step  dispatching steps and waiting for their results (metrics at a
              log, the state before a save or an evaluation)
  compile     the process's first step: tracing, compiling (or reading the
              compilation cache) and running it
  input       waiting for the next batch from the input pipeline once the
              device has finished the previous step (a wait that ends while
              that step still runs hid behind it and counts as train_step;
              one that ends after it counts whole, so this bounds the stall
              from above)
  checkpoint  the blocking part of saves: capturing the pipeline state,
              starting the write, and waiting for a write still running
  evaluation  per-task evaluation, its compiles included
  setup       from `train`'s start to the first step: lock, data, restore or
              initialisation
  other       logging

`goodput` is the fraction of wall time in `train_step`, as MaxText and Cloud
TPU define it; every other part is reported as `badput/<part>`. Parts are
measured, not derived from the total, so their sum falls short of the wall
time by whatever the loop does between timed phases.
"""

import contextlib
import dataclasses
import time
from typing import Callable, Iterator

PARTS = ('train_step', 'compile', 'input', 'checkpoint', 'evaluation',
         'setup', 'other')


@dataclasses.dataclass
class Timing:
  """The part a timed block's seconds go to; the block may change it."""
  part: str


class Goodput:
  """Seconds per part since construction (the run's start).

  Args:
    clock: seconds, monotonic.
  """

  def __init__(self, clock: Callable[[], float] = time.perf_counter):
    self._clock = clock
    self.start = clock()
    self.seconds = dict.fromkeys(PARTS, 0.0)
    self._window_start = self.start
    self._window_seconds = dict(self.seconds)

  @contextlib.contextmanager
  def timed(self, part: str) -> Iterator[Timing]:
    """Adds the block's wall time to `part` (or the part the block sets)."""
    timing = Timing(part)
    start = self._clock()
    try:
      yield timing
    finally:
      self.seconds[timing.part] += self._clock() - start

  def wall_seconds(self) -> float:
    return self._clock() - self.start

  def window(self) -> dict[str, float]:
    """`goodput` and `badput/<part>` over the wall time since the previous
    call (or the start), as fractions of it."""
    now = self._clock()
    delta = {p: self.seconds[p] - self._window_seconds[p] for p in PARTS}
    fractions = _fractions(delta, now - self._window_start)
    self._window_start, self._window_seconds = now, dict(self.seconds)
    return fractions

  def total(self) -> dict[str, float]:
    """`goodput` and `badput/<part>` over the whole run so far."""
    return _fractions(self.seconds, self.wall_seconds())

  def summary_line(self) -> str:
    """E.g. `Goodput 81.2% of 107.3 s; badput: compile 9.1%, ...`."""
    total = self.total()
    parts = ', '.join(f'{p} {100 * total[f"badput/{p}"]:.1f}%'
                      for p in PARTS[1:])
    return (f'Goodput {100 * total["goodput"]:.1f}% of '
            f'{self.wall_seconds():.1f} s; badput: {parts}')


def _fractions(seconds: dict[str, float], wall: float) -> dict[str, float]:
  wall = max(wall, 1e-9)
  fractions = {'goodput': seconds['train_step'] / wall}
  fractions.update({f'badput/{p}': seconds[p] / wall for p in PARTS[1:]})
  return fractions
