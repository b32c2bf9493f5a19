"""Two processes train one model through jax.distributed on the CPU, as the
same run does in one process."""

import os
import re
import subprocess
from unittest import mock

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf

from hyperprompt_jax.data import pipeline as data_lib
from hyperprompt_jax import infer
from tests import train_runs

NUM_PROCESSES = 2
STEPS = 3
# The runs differ only in the order of floating-point sums: each process
# reduces its own rows, then gloo adds the two (one process sums all rows at
# once). That rounding scales with an array's largest values, not with each
# element, so arrays agree to RTOL of their largest magnitude (measured after
# 3 steps: under 1e-6 of it, in Adafactor's second moments; 2e-7 in params).
RTOL = 1e-5
LOGGED = ('loss', 'cross_ent_loss', 'z_loss', 'accuracy')


def _assert_close(actual, expected, what: str) -> None:
  """Equal to RTOL of `expected`'s largest magnitude."""
  expected = np.asarray(expected)
  np.testing.assert_allclose(actual, expected, rtol=0,
                             atol=RTOL * np.abs(expected).max(), err_msg=what)


def _assert_trees_close(actual, expected) -> None:
  jax.tree.map_with_path(
      lambda path, a, b: _assert_close(a, b, jax.tree_util.keystr(path)),
      actual, expected)


def _optimizer_state(model_dir):
  """The final checkpoint's optimizer state as NumPy arrays (read with orbax:
  the trainer restores it only together with the run's input pipeline)."""
  path = model_dir / 'checkpoints' / str(STEPS) / 'state'
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                          ocp.StandardCheckpointHandler().metadata(path))
  state = ocp.PyTreeCheckpointer().restore(path, restore_args=as_numpy)
  return state['opt_state']


def _logged(model_dir) -> dict[int, dict[str, float]]:
  """{step: {tag: value}} of a run's TensorBoard train scalars in LOGGED."""
  logged = {}
  for path in (model_dir / 'train').glob('*tfevents*'):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.tag in LOGGED:
          logged.setdefault(event.step, {})[value.tag] = float(
              tf.make_ndarray(value.tensor))
  return logged


def test_two_processes_train_as_one_process_on_the_same_batches(tmp_path):
  """Two processes (one CPU device each, gradients summed over gloo) end
  where one process ends that trains on the same global batches.

  Each process reads its own shard of the data, so one process reading the
  whole mixture sees other batches by design; the one-process run here reads
  both processes' shards side by side instead, the global batch the two
  processes assemble. Same seed, steps and model, so the final parameters,
  Adafactor's statistics and the logged losses agree to RTOL. Catches
  gradients or losses that are not reduced over all processes, and the
  processes reading the same shard.
  """
  multi_dir, single_dir = tmp_path / 'two_processes', tmp_path / 'one_process'
  address = f'127.0.0.1:{train_runs.free_port()}'
  # Gloo gives the CPU backend cross-process collectives.
  env = dict(os.environ, JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo')
  no_eval = '--gin.train_loop.train.eval_dataset_cfg=None'
  processes = [
      subprocess.Popen(
          train_runs.train_command(
              tmp_path, multi_dir, STEPS, f'--coordinator_address={address}',
              f'--num_processes={NUM_PROCESSES}', f'--process_id={i}', no_eval),
          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(NUM_PROCESSES)]
  # Meanwhile the same run in this process (one CPU device).
  datasets = []

  def get_dataset(*args, **kwargs):
    datasets.append(train_runs.batches_of_processes(NUM_PROCESSES, *args,
                                                    **kwargs))
    return datasets[-1]

  with mock.patch.object(data_lib, 'get_dataset', get_dataset):
    single = train_runs.train_in_process(tmp_path, single_dir, STEPS, no_eval)
  outputs = [p.communicate(timeout=540) for p in processes]
  for p, (_, stderr) in zip(processes, outputs):
    assert p.returncode == 0, stderr[-3000:]
  assert single.returncode == 0, single.stderr

  # The processes read different rows (else a shared shard passes too).
  [dataset] = datasets
  tokens = next(dataset.as_numpy_iterator())['encoder_input_tokens']
  assert not np.array_equal(*np.split(tokens, NUM_PROCESSES))

  steps = re.findall(r'\[train step (\d)\]', outputs[0][0])
  assert [int(step) for step in steps] == [1, 2, 3]
  assert '[train step' not in outputs[1][0]  # Only process 0 logs.
  multi_logged, single_logged = _logged(multi_dir), _logged(single_dir)
  assert sorted(multi_logged) == [1, 2, 3]
  for step, values in multi_logged.items():
    assert sorted(values) == sorted(LOGGED)
    for tag, value in values.items():
      _assert_close(value, single_logged[step][tag], f'{tag} at step {step}')

  multi, single = infer.Predictor(str(multi_dir)), infer.Predictor(
      str(single_dir))
  assert multi.step == single.step == STEPS
  _assert_trees_close(multi.params, single.params)
  _assert_trees_close(_optimizer_state(multi_dir), _optimizer_state(single_dir))
