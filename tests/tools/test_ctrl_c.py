"""Ctrl-C in a command that is not training (plan, bench, infer), or while
it starts: one line, exit 130, no traceback, no crash at shutdown."""

import signal
import subprocess
import sys
import time

import pytest

from hyperprompt_jax import errors
from tests import train_runs
from tests import two_task_mixture

_LINE = 'Interrupted (Ctrl-C): stopped at once; nothing saved before was changed'


def _interrupt(command, after_seconds):
  proc = subprocess.Popen([sys.executable, '-m', *command],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  time.sleep(after_seconds)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=300)
  return proc.returncode, out, err


def _assert_one_line(code, out, err):
  assert code == errors.INTERRUPTED_EXIT_CODE, (code, out, err[-3000:])
  assert 'Traceback' not in err and 'Segmentation fault' not in err, err
  assert err.strip().splitlines()[-1] == _LINE, err[-3000:]


@pytest.mark.parametrize('command', [
    ['hyperprompt_jax.bench', '--size=tiny'],
    ['hyperprompt_jax.plan', '--gin_file=runs/synthetic_global_tiny.gin',
     '--topology=cpu:2'],
])
@pytest.mark.parametrize('after_seconds', [1, 6])
def test_ctrl_c_in_a_tool_is_one_line(command, after_seconds):
  """At 1 s the command is importing JAX and TensorFlow; at 6 s it builds
  or compiles. Catches a KeyboardInterrupt traceback, and a shutdown that
  crashes under a running compile."""
  _assert_one_line(*_interrupt(command, after_seconds))


def test_ctrl_c_in_infer_is_one_line(tmp_path):
  """infer on many inputs, interrupted while it loads or decodes."""
  model_dir = tmp_path / 'run'
  trained = train_runs.train_in_process(
      tmp_path, model_dir, 1, '--gin.train_loop.train.eval_dataset_cfg=None')
  assert trained.returncode == 0, trained.stderr
  inputs = tmp_path / 'inputs.txt'
  inputs.write_text('12345\n' * 5000)
  _assert_one_line(*_interrupt(
      ['hyperprompt_jax.infer', f'--checkpoint={model_dir}',
       f'--task={two_task_mixture.REVERSE}', f'--input_file={inputs}'], 6))
