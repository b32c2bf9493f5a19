"""A run resumed on another number of devices or processes: the train state
restored resharded for the new mesh, the input stream continued where it can
be and restarted re-seeded where it cannot (docs/training.md, "Resuming
elsewhere")."""

import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import tarfile
from unittest import mock

import numpy as np

from hyperprompt_jax.data import pipeline as data_lib
from tests import train_runs

# No evaluation; a checkpoint every 2 steps.
_BINDINGS = ('--gin.train_loop.train.eval_dataset_cfg=None',)
# Arrays of runs that differ only in the order of floating-point sums (2
# devices reduce their halves of the batch, then add them) agree to this
# fraction of their largest magnitude (as in test_multiprocess.py).
RTOL = 1e-5
# The tiny run of train_runs, packed by task, saved at step 2 (checkpoints,
# task_ids.json, config.gin) by the pipeline before rows of one task carried
# one task id (`task_ids` [batch]; the converter then gave every token an
# id), made at commit a3827df with `train_runs.train_in_process(tmp,
# tmp / 'run', 2, *_BY_TASK, '--gin.train_loop.train.eval_dataset_cfg=None',
# '--gin.KEEP_CHECKPOINTS=1')`.
_SAVED_BEFORE_ROW_TASK_IDS = (pathlib.Path(__file__).parent.parent /
                              'fixtures' / 'run_before_row_task_ids.tar.xz')
_BY_TASK = (
    '--gin.hyperprompt_config.HyperPromptConfig.one_task_per_row=True',
    '--gin.feature_converter.HyperPromptEncDecFeatureConverter.'
    'one_task_per_row=True')
# The runs' DatasetConfig.seed (gin/runs/base.gin's RANDOM_SEED).
RANDOM_SEED = 0


def _devices_env(count: int) -> dict[str, str]:
  flags = [f for f in os.environ.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  return dict(os.environ, XLA_FLAGS=' '.join(
      flags + [f'--xla_force_host_platform_device_count={count}']),
              JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo')


def _train(tmp_path, model_dir, steps, *extra, devices=1, processes=1):
  """Trains MODEL_DIR to `steps` with `processes` processes of `devices` CPU
  devices each; returns process 0's stdout."""
  if processes == 1:
    commands = [train_runs.train_command(tmp_path, model_dir, steps,
                                         *_BINDINGS, *extra)]
  else:
    address = f'127.0.0.1:{train_runs.free_port()}'
    commands = [train_runs.train_command(
        tmp_path, model_dir, steps, *_BINDINGS,
        f'--coordinator_address={address}', f'--num_processes={processes}',
        f'--process_id={i}') for i in range(processes)]
  running = [subprocess.Popen(c, env=_devices_env(devices),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in commands]
  outputs = [p.communicate(timeout=540) for p in running]
  for p, (_, stderr) in zip(running, outputs):
    assert p.returncode == 0, stderr[-3000:]
  return outputs[0][0]


def _restarts(stdout) -> list[str]:
  return re.findall(r'the input stream cannot continue \(([^)]*)\)', stdout)


def test_one_then_two_devices_continues_the_same_stream(tmp_path):
  """Saved on one device, resumed on two in one process: the state is
  restored onto the 2-device mesh and the stream continues (one process
  reads the same batches), so the run ends where an uninterrupted one-device
  run ends, to the rounding of a 2-way reduction. Catches a resume refused
  or restarted for a new mesh, and optimizer state dropped on resharding."""
  moved, straight = tmp_path / 'moved', tmp_path / 'straight'
  _train(tmp_path, moved, 2, devices=1)
  out = _train(tmp_path, moved, 4, devices=2)
  assert 'Resumed from step 2' in out and not _restarts(out)
  _train(tmp_path, straight, 4, devices=1)
  train_runs.assert_states_equal(train_runs.saved_state(moved, 4),
                                 train_runs.saved_state(straight, 4), RTOL)


def _restart_seed(seed, step, process_count):
  """The restart rule as docs/training.md states it, written here with
  NumPy: SeedSequence([seed, step, process count]), one word, halved."""
  entropy = np.random.SeedSequence([seed, step, process_count])
  return int(entropy.generate_state(1)[0] >> 1)


def test_one_two_one_processes_restart_the_stream_and_keep_the_state(
    tmp_path):
  """1 process for 2 steps, 2 processes to step 4, 1 process to step 6.

  Each change of process count restarts the input stream by the documented
  rule (one line each). Steps 3-4 end where a one-process replay ends that
  resumes step 2's checkpoint and reads both processes' shards of the
  restarted stream side by side (to RTOL, as two processes and one differ
  only in the order of sums): the state carried over, parameters and
  Adafactor statistics, onto the 2-process mesh. Then the run finishes at
  step 6 with every step logged once. Catches a refused resume, a state
  reinitialised or replicated wrongly on resume, the stream replayed from
  the start (the run's own seed), and a step count that restarts.
  """
  run, replay = tmp_path / 'run', tmp_path / 'replay'
  _train(tmp_path, run, 2)
  shutil.copytree(run, replay)
  out = _train(tmp_path, run, 4, processes=2)
  restarted = _restart_seed(RANDOM_SEED, 2, 2)
  assert 'Resumed from step 2' in out
  assert _restarts(out) == ['saved by 1 processes, resumed on 2']
  assert f'restarts with seed {restarted} ' in out

  def both_shards(cfg, feature_converter_cls, num_epochs=None):
    return train_runs.batches_of_processes(
        2, dataclasses.replace(cfg, seed=restarted), feature_converter_cls,
        num_epochs)

  with mock.patch.object(data_lib, 'get_dataset', both_shards):
    replayed = train_runs.train_in_process(tmp_path, replay, 4, *_BINDINGS)
  assert replayed.returncode == 0, replayed.stderr
  train_runs.assert_states_equal(train_runs.saved_state(run, 4),
                                 train_runs.saved_state(replay, 4), RTOL)

  out = _train(tmp_path, run, 6)
  assert 'Resumed from step 4' in out
  assert _restarts(out) == ['saved by 2 processes, resumed on 1']
  assert f'restarts with seed {_restart_seed(restarted, 4, 1)} ' in out
  assert sorted(train_runs.scalars(run / 'train', ('loss',))['loss']) == list(
      range(1, 7))
  assert int(train_runs.saved_state(run, 6)["['step']"]) == 6


def test_a_run_saved_by_an_earlier_pipeline_resumes_with_its_state(tmp_path):
  """A run saved before the feature converter changed its graph: its
  pipeline state no longer fits, so the stream restarts (one line) while
  the train state is restored as saved, and the run trains on. Catches the
  checkpoint moved aside as unreadable (its steps lost) and a crash."""
  with tarfile.open(_SAVED_BEFORE_ROW_TASK_IDS) as tar:
    # Extraction filters exist from Python 3.10.12 and 3.11.4 on.
    safe = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}
    tar.extractall(tmp_path, **safe)
  run = tmp_path / 'run'
  saved = train_runs.saved_state(run, 2)
  out = _train(tmp_path, run, 4, *_BY_TASK)
  assert 'Resumed from step 2' in out
  assert _restarts(out) == ['it is the state of another pipeline: the '
                            'dataset definition changed since it was saved']
  assert not (tmp_path / 'run' / 'checkpoints_unreadable').exists()
  assert train_runs.steps(run) == [2, 4]
  train_runs.assert_states_equal(train_runs.saved_state(run, 2), saved)
  assert int(train_runs.saved_state(run, 4)["['step']"]) == 4
