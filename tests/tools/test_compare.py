"""`python -m hyperprompt_jax.compare`: the plan of runs, the step time read
from TensorBoard, and the command end to end on tiny runs (outputs, resume)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from unittest import mock

import jax
import numpy as np
import pytest
import tensorflow as tf

from hyperprompt_jax import infer
from hyperprompt_jax.tools import compare
from hyperprompt_jax.tools.compare import runs as runs_lib
from hyperprompt_jax.tools.compare import sweep
from tests import train_runs
from tests import two_task_mixture

VARIANTS = ('none', 'share')
SEEDS = 2
STEPS = 3  # checkpoints at 2 and 3 (train_runs' CHECKPOINT_PERIOD=2)
NUM_TASKS = len(two_task_mixture.TASKS)


def compare_args(tmp_path, output_dir, *extra) -> list[str]:
  """compare's flags for tiny runs: train_runs' model and flags, passed through.

  MODEL_DIR and TRAIN_STEPS are compare's own (per run, and --steps).
  """
  train_args = train_runs.train_command(tmp_path, 'unused', STEPS)[3:]
  passed = [a for a in train_args
            if not a.startswith(('--gin.MODEL_DIR', '--gin.TRAIN_STEPS'))]
  return [f'--variants={",".join(VARIANTS)}', f'--seeds={SEEDS}',
          f'--steps={STEPS}', f'--mixture={two_task_mixture.NAME}',
          f'--output_dir={output_dir}', *passed, *extra]


def run_compare(tmp_path, output_dir, *extra):
  """compare's command in this process (its trainer runs are subprocesses)."""
  return train_runs.run_in_process(
      compare.main, compare_args(tmp_path, output_dir, *extra))


class _TrainerInThisProcess:
  """A stand-in for the trainer's `subprocess.Popen` in compare: runs
  `python -m hyperprompt_jax.train ...` in this process (four trainer
  start-ups fewer for the fixture; the rerun test keeps real subprocesses)."""

  def __init__(self, command, stdout, stderr, env, start_new_session):
    # Output goes to `stdout`; this process has the cache and no signals.
    del stderr, env, start_new_session
    assert command[1:3] == ['-m', 'hyperprompt_jax.train'], command
    result = train_runs.run_train_main(command[3:])
    stdout.write(result.stdout + result.stderr)
    self.returncode = result.returncode

  def wait(self):
    return self.returncode


@pytest.fixture(scope='module')
def comparison(tmp_path_factory):
  """(tmp_path, output_dir, CompletedProcess) of one tiny comparison."""
  tmp_path = tmp_path_factory.mktemp('compare')
  output_dir = tmp_path / 'out'
  in_process = types.SimpleNamespace(Popen=_TrainerInThisProcess,
                                     STDOUT=subprocess.STDOUT)
  with mock.patch.object(runs_lib, 'subprocess', in_process):
    result = run_compare(tmp_path, output_dir)
  assert result.returncode == 0, result.stdout + result.stderr[-3000:]
  return tmp_path, output_dir, result


def run_names():
  return [f'{v}-seed{s}' for v in VARIANTS for s in range(SEEDS)]


def eval_results(output_dir, name):
  with open(output_dir / name / runs_lib.RESULTS_FILE) as f:
    return json.load(f)


def saved_param_count(output_dir, name) -> int:
  """Parameters in run `name`'s final checkpoint (restored by `Predictor`),
  counted array by array: independent of param_counts' formulas."""
  params = infer.Predictor(str(output_dir / name)).params
  return sum(leaf.size for leaf in jax.tree.leaves(params))


def test_settings_apply_each_ablation_only_where_it_changes_the_variant():
  config = sweep.CompareConfig(
      variants=('none', 'global', 'adapter', 'prompt_tuning'), seeds=1,
      tunes=('all', 'conditioning'), prompt_lengths=(4,),
      conditions=('both', 'encoder'))
  assert [s.name for s in config.settings()] == [
      'none',
      'global-l4', 'global-l4-encoder',
      'global-frozen-l4', 'global-frozen-l4-encoder',
      'adapter', 'adapter-encoder', 'adapter-frozen', 'adapter-frozen-encoder',
      'prompt_tuning-l4', 'prompt_tuning-frozen-l4']
  frozen = sweep.Setting('global', 'conditioning', 4, 'encoder')
  assert frozen.bindings() == ["TUNE = 'conditioning'", 'PROMPT_LENGTH = 4',
                               'CONDITION_DECODER = False']
  assert sweep.Setting('global').bindings() == []


def test_train_command_puts_the_variant_file_after_the_gin_files(tmp_path):
  config = compare.parse_args(compare_args(tmp_path, tmp_path / 'out'))
  run = sweep.Run(sweep.Setting('share'), seed=1)
  command = runs_lib.train_command(config, run)
  assert command[1:3] == ['-m', 'hyperprompt_jax.train']
  files = [a for a in command if a.startswith('--gin_file=')]
  assert files == ['--gin_file=runs/synthetic_tiny_base.gin',
                   '--gin_file=two_task_mixture.gin',
                   '--gin_file=variants/share.gin']
  assert command[-4:] == [
      f"--gin_bindings=MODEL_DIR = '{tmp_path / 'out' / 'share-seed1'}'",
      '--gin_bindings=RANDOM_SEED = 1',
      f"--gin_bindings=MIXTURE_OR_TASK_NAME = '{two_task_mixture.NAME}'",
      f'--gin_bindings=TRAIN_STEPS = {STEPS}']


@pytest.mark.parametrize('flag, message', [
    ('--variants=global,globl', "bad --variants='global,globl'"),
    ('--tune=frozen', "bad --tune='frozen'"),
    ('--prompt_lengths=4,x', "bad --prompt_lengths='4,x'"),
    ('--condition=decoder', "bad --condition='decoder'"),
    ('--seeds=0', 'bad --seeds=0'),
    ('--gin.TRAIN_STEPS=5', '--gin.TRAIN_STEPS is set per run by compare: use '
     '--steps instead'),
])
def test_bad_flags(flag, message):
  with pytest.raises(ValueError, match=message.replace('.', r'\.')):
    compare.parse_args([flag])


def test_unknown_variant_is_one_error_line(tmp_path):
  result = train_runs.run_in_process(
      compare.main, ['--variants=globl', f'--output_dir={tmp_path}'])
  assert train_runs.error_line(result).startswith(
      "error: bad --variants='globl': give comma-separated values from none,")
  assert not list(tmp_path.iterdir())


def test_step_time_is_the_median_of_windows_after_each_sessions_first(
    tmp_path):
  # Two trainer sessions (a resumed run): each first window compiles.
  for session, windows in enumerate([[9.0, 0.1, 0.3], [8.0, 0.2]]):
    writer = tf.summary.create_file_writer(
        str(tmp_path / 'train'), filename_suffix=f'.{session}')
    with writer.as_default():
      for step, seconds in enumerate(windows):
        tf.summary.scalar('step_time_seconds', seconds, step=step)
    writer.close()
  assert runs_lib.step_time_seconds(str(tmp_path)) == pytest.approx(0.2)
  assert runs_lib.step_time_seconds(str(tmp_path / 'none')) is None


def test_outputs_hold_every_run_and_their_mean_and_std(comparison):
  _, output_dir, result = comparison
  with open(output_dir / 'comparison.json') as f:
    saved = json.load(f)
  assert [r['name'] for r in saved['runs']] == run_names()
  assert saved['failed'] == []
  for run in saved['runs']:  # every run's per-task metrics, as evaluated
    assert run['results'] == eval_results(output_dir, run['name'])['results']
    assert run['step_time_seconds'] > 0
  tasks = sorted(saved['runs'][0]['results'])
  assert len(tasks) == NUM_TASKS
  counts = {v: saved_param_count(output_dir, f'{v}-seed0') for v in VARIANTS}
  for row, variant in zip(saved['rows'], VARIANTS):
    assert row['name'] == variant
    runs = [eval_results(output_dir, f'{variant}-seed{s}')['results']
            for s in range(SEEDS)]
    for task in tasks:
      for metric in runs[0][task]:
        values = [r[task][metric] for r in runs]
        assert row['metrics'][task][metric] == pytest.approx(
            {'mean': np.mean(values), 'std': np.std(values, ddof=1)})
      scores = [np.mean([v for k, v in r[task].items()
                         if k not in ('loss', 'token_accuracy')])
                for r in runs]
      assert row['tasks'][task]['mean'] == pytest.approx(np.mean(scores))
    added, backbone = counts[variant] - counts['none'], counts['none']
    assert added > 0 or variant == 'none'
    assert (row['added_params'], row['backbone_params']) == (added, backbone)
    assert row['added_percent'] == pytest.approx(100 * added / backbone)
    assert row['step_time_seconds']['mean'] > 0

  table = (output_dir / 'comparison.md').read_text()
  assert table.split('\n\n', 1)[1].strip() in result.stdout
  lines = table.splitlines()
  assert lines[2].startswith('| variant | contains_seven | reverse |')
  share_added = f'{counts["share"] - counts["none"]:,}'
  assert lines[-1].startswith('| share |') and f'| {share_added} |' in lines[-1]
  png = (output_dir / 'comparison.png').read_bytes()
  assert png.startswith(b'\x89PNG') and len(png) > 10_000
  for name in run_names():
    assert (output_dir / name / runs_lib.LOG_FILE).read_text().startswith(
        f'$ {sys.executable} -m hyperprompt_jax.train ')


def test_rerun_keeps_finished_runs_and_completes_the_unfinished_one(
    comparison):
  tmp_path, output_dir, _ = comparison
  unfinished = output_dir / 'share-seed1'
  # As if stopped after step 2: no step-3 checkpoint, no results.
  shutil.rmtree(unfinished / 'checkpoints' / str(STEPS))
  os.remove(unfinished / runs_lib.RESULTS_FILE)
  finished = [n for n in run_names() if n != 'share-seed1']
  before = {n: os.stat(output_dir / n / runs_lib.RESULTS_FILE).st_mtime_ns
            for n in finished}
  checkpoints = {n: sorted(os.listdir(output_dir / n / 'checkpoints'))
                 for n in finished}

  result = run_compare(tmp_path, output_dir)
  assert result.returncode == 0, result.stdout + result.stderr[-3000:]
  for name in finished:
    assert f'{name}: finished at step {STEPS}, not retrained' in result.stdout
    assert os.stat(output_dir / name / runs_lib.RESULTS_FILE
                   ).st_mtime_ns == before[name]
    assert sorted(os.listdir(output_dir / name / 'checkpoints')
                  ) == checkpoints[name]
  assert 'share-seed1: training to step 3' in result.stdout
  assert 'Resumed from step 2' in (unfinished / runs_lib.LOG_FILE).read_text()
  assert eval_results(output_dir, 'share-seed1')['step'] == STEPS


def test_ctrl_c_is_passed_on_once_and_compare_stops_like_the_trainer(
    tmp_path):
  """Ctrl-C to compare while a run trains: the trainer gets it once (it runs
  in its own session, so a terminal's Ctrl-C does not reach it twice),
  saves its step and exits 130; compare says so in one line and exits 130.
  Catches a compare traceback, and a trainer stopped at once without a
  save."""
  output_dir = tmp_path / 'out'
  args = compare_args(tmp_path, output_dir, '--steps=1000',
                      '--gin.train_loop.train.eval_dataset_cfg=None')
  proc = subprocess.Popen(
      [sys.executable, '-m', 'hyperprompt_jax.compare', *args],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  log = output_dir / 'none-seed0' / runs_lib.LOG_FILE
  while proc.poll() is None and not (
      log.exists() and '[train step 2]' in log.read_text()):
    time.sleep(0.2)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 130, (out, err[-3000:])
  assert 'Traceback' not in err, err[-3000:]
  assert out.strip().splitlines()[-1] == (
      f'none-seed0 was interrupted (saved in {output_dir / "none-seed0"}); '
      'run the same compare command again to continue (exit code 130)')
  assert 'Interrupted at step' in log.read_text()
  assert train_runs.steps(output_dir / 'none-seed0')
