"""Goodput: a run's wall time split into train steps and badput parts, per
log window and for the run, on the console and in TensorBoard."""

import re
import time

import pytest

from hyperprompt_jax.training import goodput
from tests import train_runs


class _Clock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_parts_windows_and_totals_follow_the_clock():
  """Seconds land in the part whose block they pass in; a window covers the
  time since the previous one. Catches windows that report the run's
  cumulative fractions, and time counted twice."""
  clock = _Clock()
  run = goodput.Goodput(clock)
  with run.timed('setup'):
    clock.now += 2
  with run.timed('train_step'):
    clock.now += 6
  clock.now += 2  # Untimed.
  assert run.window() == pytest.approx(
      {'goodput': 0.6, 'badput/compile': 0, 'badput/input': 0,
       'badput/checkpoint': 0, 'badput/evaluation': 0, 'badput/setup': 0.2,
       'badput/other': 0})
  with run.timed('input') as timing:
    clock.now += 5
    timing.part = 'checkpoint'  # A block may name its part at the end.
  window = run.window()
  assert window['goodput'] == 0 and window['badput/checkpoint'] == 1
  assert window['badput/setup'] == 0 and window['badput/input'] == 0
  total = run.total()
  assert total['goodput'] == pytest.approx(6 / 15)
  assert total['badput/checkpoint'] == pytest.approx(5 / 15)
  assert run.summary_line() == (
      'Goodput 40.0% of 15.0 s; badput: compile 0.0%, input 0.0%, checkpoint '
      '33.3%, evaluation 0.0%, setup 13.3%, other 0.0%')


def test_a_runs_parts_add_up_to_its_wall_time(tmp_path):
  """A tiny run with saves and evaluation: the parts of its summary line add
  up to the wall time measured around it (within 5%), every part it went
  through is there, and TensorBoard holds goodput per log window and the
  run's totals. Catches phases left out of the accounting (a sum that falls
  short) or counted twice (one that exceeds)."""
  model_dir = tmp_path / 'run'
  start = time.perf_counter()
  result = train_runs.train_in_process(tmp_path, model_dir, 4)
  wall = time.perf_counter() - start
  assert result.returncode == 0, result.stderr
  [line] = [l for l in result.stdout.splitlines() if l.startswith('Goodput')]
  match = re.fullmatch(r'Goodput ([\d.]+)% of ([\d.]+) s; badput: (.*)', line)
  assert match, line
  parts = dict(re.findall(r'(\w+) ([\d.]+)%', match.group(3)))
  assert set(parts) == {'compile', 'input', 'checkpoint', 'evaluation',
                        'setup', 'other'}
  fractions = [float(match.group(1))] + [float(v) for v in parts.values()]
  accounted = sum(fractions) / 100 * float(match.group(2))
  assert abs(accounted - wall) < 0.05 * wall, (accounted, wall, line)
  for part in ('compile', 'checkpoint', 'evaluation', 'setup'):
    assert float(parts[part]) > 0, line
  assert '[train step 1]' in result.stdout and 'badput' not in ''.join(
      l for l in result.stdout.splitlines() if l.startswith('[train'))

  logged = train_runs.scalars(model_dir / 'train', ('goodput', 'badput/', 'run/'))
  assert sorted(logged['goodput']) == [1, 2, 3, 4]
  assert all(0 <= v <= 1 for v in logged['goodput'].values())
  assert logged['run/goodput'] == {4: pytest.approx(
      float(match.group(1)) / 100, abs=1e-3)}
  assert sorted(logged['badput/compile']) == [1, 2, 3, 4]
