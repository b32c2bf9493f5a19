"""Checkpointer: round trip with the input pipeline, params-only restore,
unreadable checkpoints set aside, other models' checkpoints named, one-line
errors."""

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


def _batches():
  """A fresh shuffled pipeline: batch i is shuffled, so position matters."""
  ds = tf.data.Dataset.range(1000).shuffle(100, seed=0).batch(2).map(
      lambda x: {'x': x})
  return pipeline.BatchIterator(ds, _SHARDING)


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


@pytest.mark.parametrize('item', ['state', 'pipeline'])
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
