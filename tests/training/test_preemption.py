"""SIGTERM saves the current step and exits with preemption.EXIT_CODE; the
same command then resumes, bit-identical to a run that was never stopped."""

import re
import signal
import subprocess

import jax
import numpy as np
import orbax.checkpoint as ocp

from hyperprompt_jax.training import preemption
from tests import train_runs

# No evaluation and no periodic saves: the only saves are the preempted step
# and the final one.
_BINDINGS = ('--gin.train_loop.train.eval_dataset_cfg=None',
             '--gin.CHECKPOINT_PERIOD=1000')


def _state(model_dir, step):
  """The saved TrainState at `step` as {key path: numpy array}."""
  tree = ocp.StandardCheckpointer().restore(
      model_dir / 'checkpoints' / str(step) / 'state')
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _preempt_after_step(tmp_path, model_dir, step):
  """Starts a long run and sends SIGTERM once `step` is logged."""
  proc = subprocess.Popen(
      train_runs.train_command(tmp_path, model_dir, 1000, *_BINDINGS),
      stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL, text=True)
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if line.startswith(f'[train step {step}]'):
      proc.send_signal(signal.SIGTERM)
      break
  lines.extend(proc.stdout)
  return proc.wait(timeout=600), ''.join(lines)


def test_sigterm_saves_and_the_resumed_run_is_bit_identical(tmp_path):
  model_dir = tmp_path / 'preempted'
  code, out = _preempt_after_step(tmp_path, model_dir, 2)
  assert code == preemption.EXIT_CODE, out[-3000:]
  stopped = re.findall(r'^Preempted at step (\d+): saved (\S+); run the same '
                       'command again to resume', out, re.M)
  assert len(stopped) == 1, out[-3000:]
  step = int(stopped[0][0])
  assert step >= 2 and train_runs.steps(model_dir) == [step]

  final = step + 2
  resumed = train_runs.train_in_process(tmp_path, model_dir, final,
                                         *_BINDINGS)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'Resumed from step {step}' in resumed.stdout
  straight = train_runs.train_in_process(tmp_path, tmp_path / 'straight',
                                          final, *_BINDINGS)
  assert straight.returncode == 0, straight.stderr[-3000:]

  got = _state(model_dir, final)
  want = _state(tmp_path / 'straight', final)
  assert got.keys() == want.keys() and len(got) > 3
  for path, value in want.items():
    np.testing.assert_array_equal(got[path], value, err_msg=path)


def test_watcher_turns_sigterm_into_a_stop_and_restores_the_handler():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.Watcher(lambda step: False) as watcher:
    assert not watcher.reached(1)
    signal.raise_signal(signal.SIGTERM)
    assert watcher.reached(2)
  assert signal.getsignal(signal.SIGTERM) is before


def test_watcher_follows_the_sync_point_of_all_processes():
  with preemption.Watcher(lambda step: step == 7) as watcher:
    assert not watcher.reached(6)
    assert watcher.reached(7)
