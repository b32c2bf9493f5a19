"""Checkpointer: round trip with the input pipeline, params-only restore,
unreadable checkpoints set aside, other models' checkpoints named, one-line
errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf

from hyperprompt_jax.checkpointing import checkpoints
from hyperprompt_jax.data import pipeline
from hyperprompt_jax.training import train_state
from tests import train_runs

_SHARDING = jax.sharding.SingleDeviceSharding(jax.devices()[0])


def _state(step: int, width: int = 2) -> train_state.TrainState:
  params = {'dense': {'kernel': jnp.full((3, width), float(step))},
            'bias': jnp.arange(2.0)}
  state = train_state.TrainState.create(params, optax.adam(1e-3))
  return state.replace(step=jnp.asarray(step, jnp.int32))


def _abstract(tree):
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=_SHARDING),
      tree)


def _dataset(seed):
  return tf.data.Dataset.range(1000).shuffle(100, seed=seed).batch(2).map(
      lambda x: {'x': x})


def _batches():
  """A fresh shuffled pipeline: batch i is shuffled, so position matters."""
  return pipeline.BatchIterator(_dataset, _SHARDING, seed=0)


def _save(model_dir, steps):
  """Saves after consuming 10 * step batches; returns the next batch each."""
  checkpointer = checkpoints.Checkpointer(
      str(model_dir), checkpoints.CheckpointConfig(period=1, keep=None))
  batches, following = _batches(), {}
  for step in steps:
    while batches.position < 10 * step:
      next(batches)
    checkpointer.save(_state(step), batches)
    following[step] = np.asarray(next(batches)['x'])
  checkpointer.wait_until_finished()
  checkpointer.close()
  return following


def test_restore_round_trip_with_the_input_pipeline(tmp_path):
  following = _save(tmp_path, [1, 2])
  checkpointer = checkpoints.Checkpointer(str(tmp_path), read_only=True)
  batches = _batches()
  state = checkpointer.restore(_abstract(_state(0)), batches)
  assert int(state.step) == 2 and batches.position == 20
  np.testing.assert_array_equal(state.params['dense']['kernel'],
                                np.full((3, 2), 2.0))
  np.testing.assert_array_equal(next(batches)['x'], following[2])
  batches = _batches()
  state = checkpointer.restore(_abstract(_state(0)), batches, step=1)
  assert int(state.step) == 1 and batches.position == 10
  np.testing.assert_array_equal(next(batches)['x'], following[1])


def test_restore_params_reads_only_the_params(tmp_path):
  _save(tmp_path, [3])
  checkpointer = checkpoints.Checkpointer(str(tmp_path), read_only=True)
  params, step = checkpointer.restore_params(_abstract(_state(0).params))
  assert step == 3
  assert jax.tree.structure(params) == jax.tree.structure(_state(0).params)
  np.testing.assert_array_equal(params['dense']['kernel'], np.full((3, 2), 3.0))


def test_missing_dir_and_step_are_one_line_errors(tmp_path):
  with pytest.raises(checkpoints.CheckpointError, match='no checkpoints in'):
    checkpoints.Checkpointer(str(tmp_path / 'none'), read_only=True)
  _save(tmp_path, [1])
  checkpointer = checkpoints.Checkpointer(str(tmp_path), read_only=True)
  with pytest.raises(checkpoints.CheckpointError,
                     match=r'no checkpoint for step 5 .* available: \[1\]'):
    checkpointer.restore_params(_abstract(_state(0).params), step=5)


def test_damaged_checkpoint_is_a_one_line_error_naming_the_step(tmp_path):
  _save(tmp_path, [1, 2])
  train_runs.damage(tmp_path, 2, 'state')
  checkpointer = checkpoints.Checkpointer(str(tmp_path), read_only=True)
  with pytest.raises(checkpoints.CheckpointError) as error:
    checkpointer.restore(_abstract(_state(0)), _batches())
  message = str(error.value)
  assert '\n' not in message and 'delete' not in message
  assert message.startswith(
      f"checkpoint {tmp_path / 'checkpoints' / '2'} is unreadable")
  state = checkpointer.restore(_abstract(_state(0)), _batches(), step=1)
  assert int(state.step) == 1


@pytest.mark.parametrize('item', ['state', 'data', 'pipeline'])
def test_unreadable_latest_is_set_aside_and_the_previous_restored(
    tmp_path, capsys, item):
  following = _save(tmp_path, [1, 2, 3])
  train_runs.damage(tmp_path, 3, item)
  checkpointer = checkpoints.Checkpointer(str(tmp_path))
  batches = _batches()
  state = checkpointer.restore_latest_readable(_abstract(_state(0)), batches)
  assert int(state.step) == 2
  np.testing.assert_array_equal(next(batches)['x'], following[2])
  moved = tmp_path / checkpoints.UNREADABLE_DIR / '3'
  assert (moved / item).is_dir()  # Moved whole, nothing deleted.
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == [
      '1', '2']
  assert checkpointer.latest_step() == 2
  [line] = capsys.readouterr().out.splitlines()
  assert line.startswith(f"checkpoint {tmp_path / 'checkpoints' / '3'} is "
                         'unreadable (')
  assert line.endswith(f': moved it to {moved}; trying the previous checkpoint')


def _restarted(seed, step):
  """The batches of the stream restarted at `step` in one process, computed
  from the rule docs/training.md states (NumPy's SeedSequence of the run's
  seed, the step and the process count), not through the pipeline module."""
  entropy = np.random.SeedSequence([seed, step, 1])
  restart = int(entropy.generate_state(1)[0] >> 1)
  return restart, [b['x'] for b in _dataset(restart).take(3).as_numpy_iterator()]


def _assert_restarted(capsys, tmp_path, batches, step, seed, reason):
  restart, expected = _restarted(seed, step)
  assert batches.seed == restart != seed
  for want in expected:
    np.testing.assert_array_equal(next(batches)['x'], want)
  [line] = capsys.readouterr().out.splitlines()
  assert line.startswith(f"checkpoint {tmp_path / 'checkpoints' / str(step)}: "
                         f'the input stream cannot continue ({reason}')
  assert f'restarts with seed {restart} ' in line
  assert not (tmp_path / checkpoints.UNREADABLE_DIR).exists()


def test_a_changed_pipeline_keeps_the_state_and_restarts_the_stream(
    tmp_path, capsys):
  """A pipeline whose graph changed since the save (an upgrade that changes
  the feature converter) keeps the saved train state and position and
  restarts the stream re-seeded. Catches the checkpoint being moved aside
  (steps lost) or the stream replaying the run's first batches."""
  _save(tmp_path, [1, 2])
  checkpointer = checkpoints.Checkpointer(str(tmp_path))
  changed = pipeline.BatchIterator(
      lambda seed: _dataset(seed).map(lambda b: {'x': b['x'] * 1}),
      _SHARDING, seed=0)
  state = checkpointer.restore_latest_readable(_abstract(_state(0)), changed)
  assert int(state.step) == 2 and changed.position == 20
  np.testing.assert_array_equal(state.params['dense']['kernel'],
                                np.full((3, 2), 2.0))
  _assert_restarted(capsys, tmp_path, changed, 2, 0,
                    'it is the state of another pipeline')


def _set_process_count(model_dir, step, count):
  """Rewrites checkpoint `step`'s record as if `count` processes saved it."""
  path = model_dir / 'checkpoints' / str(step) / 'data' / 'metadata'
  record = json.loads(path.read_text())
  record['process_count'] = count
  path.write_text(json.dumps(record))


def test_another_process_count_restarts_the_stream_and_a_later_resume_continues_it(
    tmp_path, capsys):
  """A checkpoint saved by 2 processes resumed by 1: the state as saved, the
  stream restarted (the 2 saved per-process states cannot make 1). The
  restarted stream's seed is saved with the next checkpoint, so resuming
  that one continues it exactly. Catches a refused resume, a replayed stream
  and a second restart."""
  _save(tmp_path, [1])
  _set_process_count(tmp_path, 1, 2)
  checkpointer = checkpoints.Checkpointer(
      str(tmp_path), checkpoints.CheckpointConfig(period=1, keep=None))
  batches = _batches()
  state = checkpointer.restore_latest_readable(_abstract(_state(0)), batches)
  assert int(state.step) == 1 and batches.position == 10
  restart, _ = _restarted(0, 1)
  _assert_restarted(capsys, tmp_path, batches, 1, 0,
                    'saved by 2 processes, resumed on 1')
  checkpointer.save(_state(2), batches)
  checkpointer.wait_until_finished()
  following = np.asarray(next(batches)['x'])
  resumed = _batches()
  assert int(checkpointer.restore(_abstract(_state(0)), resumed).step) == 2
  assert resumed.seed == restart and resumed.position == 13
  np.testing.assert_array_equal(next(resumed)['x'], following)
  assert capsys.readouterr().out == ''


def test_restart_seeds_differ_by_step_and_process_count():
  """Restarts at other steps or process counts read other streams; an
  unseeded run stays unseeded."""
  seeds = {pipeline.restart_seed(42, step, count)
           for step in (1, 2) for count in (1, 2)}
  assert len(seeds) == 4 and 42 not in seeds
  assert all(0 <= seed < 2**31 for seed in seeds)
  assert pipeline.restart_seed(None, 1, 1) is None


def test_nothing_readable_means_a_fresh_start_with_all_kept(tmp_path):
  _save(tmp_path, [1])
  train_runs.damage(tmp_path, 1, 'state')
  checkpointer = checkpoints.Checkpointer(str(tmp_path))
  assert checkpointer.restore_latest_readable(
      _abstract(_state(0)), _batches()) is None
  assert (tmp_path / checkpoints.UNREADABLE_DIR / '1' / 'state').is_dir()


def test_checkpoint_of_another_model_names_the_first_difference(tmp_path):
  _save(tmp_path, [1])
  checkpointer = checkpoints.Checkpointer(str(tmp_path))
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match=r'was saved by another model: params/dense/kernel '
                     r'has shape \(3, 2\) in the checkpoint, \(3, 5\) in the '
                     'model') as error:
    checkpointer.restore_latest_readable(_abstract(_state(0, width=5)),
                                         _batches())
  assert 'delete' not in str(error.value)
  assert not (tmp_path / checkpoints.UNREADABLE_DIR).exists()
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match=r'params/dense/kernel has shape \(3, 2\)'):
    checkpointer.restore_params(_abstract(_state(0, width=5).params))


def test_tree_mismatch_names_missing_and_extra_parameters():
  model = {'a': jnp.zeros(2), 'b': jnp.zeros(3)}
  assert checkpoints.tree_mismatch(model, model) is None
  assert checkpoints.tree_mismatch(model, {'a': jnp.zeros(2)}) == (
      'b (shape (3,)) is missing from the checkpoint')
  assert checkpoints.tree_mismatch({'a': jnp.zeros(2)}, model) == (
      'b (shape (3,)) is in the checkpoint but not in the model')
