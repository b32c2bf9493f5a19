"""SIGTERM saves the current step and exits with preemption.EXIT_CODE; the
same command then resumes, bit-identical to a run that was never stopped.
Ctrl-C (SIGINT) saves the same way and exits with 130; a second Ctrl-C, or
one during set-up, stops at once with one line."""

import re
import signal
import subprocess
import time

import pytest

from hyperprompt_jax import errors
from hyperprompt_jax.training import preemption
from tests import train_runs

# No evaluation and no periodic saves: the only saves are the preempted step
# and the final one.
_BINDINGS = ('--gin.train_loop.train.eval_dataset_cfg=None',
             '--gin.CHECKPOINT_PERIOD=1000')


def _preempt_after_step(tmp_path, model_dir, step, signals=(signal.SIGTERM,),
                        *extra, after_a_save=False):
  """Starts a long run and sends `signals` (0.5 s apart) once `step` is
  logged (and, `after_a_save`, a checkpoint is complete); returns the exit
  code, stdout and stderr."""
  proc = subprocess.Popen(
      train_runs.train_command(tmp_path, model_dir, 1000, *_BINDINGS, *extra),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if line.startswith(f'[train step {step}]'):
      while after_a_save and not train_runs.steps(model_dir):
        time.sleep(0.1)
      for i, signum in enumerate(signals):
        if i:
          time.sleep(0.5)
        proc.send_signal(signum)
      break
  out, err = proc.communicate(timeout=600)
  return proc.returncode, ''.join(lines) + out, err


def test_sigterm_saves_and_the_resumed_run_is_bit_identical(tmp_path):
  model_dir = tmp_path / 'preempted'
  code, out, _ = _preempt_after_step(tmp_path, model_dir, 2)
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

  train_runs.assert_states_equal(
      train_runs.saved_state(model_dir, final),
      train_runs.saved_state(tmp_path / 'straight', final))


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


def _no_traceback(err):
  assert 'Traceback' not in err and 'Segmentation fault' not in err, err[-3000:]


def test_ctrl_c_saves_the_step_and_exits_130(tmp_path):
  """Ctrl-C stops like SIGTERM: the current step is saved, one line, exit
  130. Catches a KeyboardInterrupt traceback that loses every step since the
  last checkpoint."""
  model_dir = tmp_path / 'interrupted'
  code, out, err = _preempt_after_step(tmp_path, model_dir, 2,
                                       (signal.SIGINT,))
  assert code == errors.INTERRUPTED_EXIT_CODE, err[-3000:]
  _no_traceback(err)
  stopped = re.findall(r'^Interrupted at step (\d+): saved \S+; run the same '
                       r'command again to resume \(exit code 130\)$', out,
                       re.M)
  assert len(stopped) == 1, out[-3000:]
  assert train_runs.steps(model_dir) == [int(stopped[0])]


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_checkpoints(tmp_path):
  """Two Ctrl-C half a second apart after step 2 of a run saving every
  step: one line, exit 130 (unless the first Ctrl-C's stop had finished
  and the process was exiting); the steps saved before stay readable (a resume
  continues from the latest) and a save cut short leaves no temporary folder
  after that resume. Catches a second Ctrl-C that is ignored, or one that
  leaves a traceback, a damaged checkpoint or a stray temporary folder."""
  model_dir = tmp_path / 'twice'
  code, out, err = _preempt_after_step(
      tmp_path, model_dir, 2, (signal.SIGINT, signal.SIGINT),
      '--gin.CHECKPOINT_PERIOD=1', after_a_save=True)
  _no_traceback(err)
  if re.search(r'^Interrupted at step \d+: saved', out, re.M):
    # The first Ctrl-C's save was done within the half second; the second
    # reached the exiting process (late in shutdown Python's own handler,
    # which ends it by the signal).
    assert code in (errors.INTERRUPTED_EXIT_CODE, -signal.SIGINT), err
  else:
    assert code == errors.INTERRUPTED_EXIT_CODE, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        'Interrupted (Ctrl-C): stopped at once; nothing saved before was '
        'changed')
  saved = train_runs.steps(model_dir)
  assert saved and saved[-1] >= 1
  resumed = train_runs.train_in_process(tmp_path, model_dir, saved[-1] + 1,
                                         *_BINDINGS)
  assert resumed.returncode == 0, resumed.stderr
  assert f'Resumed from step {saved[-1]}' in resumed.stdout
  assert not list(model_dir.glob('checkpoints/*tmp*'))


def test_ctrl_c_during_set_up_is_one_line(tmp_path):
  """Ctrl-C while the command imports, builds the pipeline or compiles: one
  line, exit 130, no traceback and no crash at shutdown (the segfault of
  an interpreter exiting under an XLA compile)."""
  proc = subprocess.Popen(
      train_runs.train_command(tmp_path, tmp_path / 'set_up', 1000,
                               *_BINDINGS),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  time.sleep(4)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == errors.INTERRUPTED_EXIT_CODE, (out, err[-3000:])
  _no_traceback(err)
  assert 'Interrupted (Ctrl-C): stopped at once' in err or re.search(
      r'^Interrupted at step \d+', out, re.M), (out, err[-3000:])


def test_watcher_turns_ctrl_c_into_a_stop_and_a_second_into_keyboard_interrupt():
  before = signal.getsignal(signal.SIGINT)
  with preemption.Watcher(lambda step: False) as watcher:
    signal.raise_signal(signal.SIGINT)
    assert watcher.reached(1)
    assert watcher.exit_code == errors.INTERRUPTED_EXIT_CODE
    with pytest.raises(KeyboardInterrupt):
      signal.raise_signal(signal.SIGINT)
  assert signal.getsignal(signal.SIGINT) is before


def test_sigterm_then_ctrl_c_exits_as_preempted():
  with preemption.Watcher(lambda step: False) as watcher:
    signal.raise_signal(signal.SIGTERM)
    signal.raise_signal(signal.SIGINT)
    assert watcher.exit_code == preemption.EXIT_CODE
