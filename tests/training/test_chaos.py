"""A tiny run stopped three times at seeded random moments, once each by
kill -9, SIGTERM and Ctrl-C (SIGINT), then finished, ends bit-identical to a
run never stopped."""

import random
import signal
import subprocess
import time

from hyperprompt_jax import errors
from hyperprompt_jax.training import preemption
from tests import train_runs

STEPS = 12
SEED = 20261204
# Saves every 2 steps (train_runs), no evaluation, a line per step.
_BINDINGS = ('--gin.train_loop.train.eval_dataset_cfg=None',)
_EXIT_CODES = {signal.SIGKILL: -signal.SIGKILL,
               signal.SIGTERM: preemption.EXIT_CODE,
               signal.SIGINT: errors.INTERRUPTED_EXIT_CODE}


def _stop_at(tmp_path, model_dir, signum, rng):
  """Runs to STEPS and sends `signum` at a random moment: 0-0.3 s after the
  line of a random step at least one past where it started."""
  proc = subprocess.Popen(
      train_runs.train_command(tmp_path, model_dir, STEPS, *_BINDINGS),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  saved = (model_dir / 'checkpoints').is_dir() and train_runs.steps(model_dir)
  start = saved[-1] if saved else 0  # Where the run resumes.
  target = rng.randint(start + 1, min(start + 3, STEPS - 1))
  for line in proc.stdout:
    if line.startswith(f'[train step {target}]'):
      time.sleep(rng.uniform(0, 0.3))
      proc.send_signal(signum)
      break
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == _EXIT_CODES[signum], (signum, err[-3000:])
  assert 'Traceback' not in err, err[-3000:]


def test_three_stops_then_finished_is_bit_identical(tmp_path):
  """Catches any stop that loses or repeats a step's update, a pipeline
  resumed at the wrong batch, and a half-written save or a stale lock that
  blocks or corrupts the next start."""
  rng = random.Random(SEED)
  stopped = tmp_path / 'stopped'
  for signum in rng.sample(list(_EXIT_CODES), 3):
    _stop_at(tmp_path, stopped, signum, rng)
  finished = train_runs.train(tmp_path, stopped, STEPS, *_BINDINGS)
  assert finished.returncode == 0, finished.stderr[-3000:]
  straight = train_runs.train_in_process(tmp_path, tmp_path / 'straight',
                                          STEPS, *_BINDINGS)
  assert straight.returncode == 0, straight.stderr
  train_runs.assert_states_equal(
      train_runs.saved_state(stopped, STEPS),
      train_runs.saved_state(tmp_path / 'straight', STEPS))
