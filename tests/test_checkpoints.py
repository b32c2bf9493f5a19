"""Checkpointer: round trip with the data position, params-only restore,
clear one-line errors for missing and damaged checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hyperprompt_jax import checkpoints
from hyperprompt_jax import train_state


def _state(step: int) -> train_state.TrainState:
  params = {'dense': {'kernel': jnp.full((3, 2), float(step))},
            'bias': jnp.arange(2.0)}
  state = train_state.TrainState.create(params, optax.adam(1e-3))
  return state.replace(step=jnp.asarray(step, jnp.int32))


def _abstract(tree):
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _save(model_dir, steps):
  checkpointer = checkpoints.Checkpointer(
      str(model_dir), checkpoints.CheckpointConfig(period=1, keep=None))
  for step in steps:
    checkpointer.save(_state(step), data_position=10 * step)
  checkpointer.wait_until_finished()
  checkpointer.close()


def test_restore_round_trip_with_data_position(tmp_path):
  _save(tmp_path, [1, 2])
  checkpointer = checkpoints.Checkpointer(str(tmp_path), read_only=True)
  state, position = checkpointer.restore(_abstract(_state(0)))
  assert int(state.step) == 2 and position == 20
  np.testing.assert_array_equal(state.params['dense']['kernel'],
                                np.full((3, 2), 2.0))
  state, position = checkpointer.restore(_abstract(_state(0)), step=1)
  assert int(state.step) == 1 and position == 10


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
  for path in (tmp_path / 'checkpoints' / '2' / 'state').rglob('*'):
    if path.is_file():
      path.write_bytes(b'garbage')
  checkpointer = checkpoints.Checkpointer(str(tmp_path), read_only=True)
  with pytest.raises(checkpoints.CheckpointError) as error:
    checkpointer.restore(_abstract(_state(0)))
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith(
      f"checkpoint {tmp_path / 'checkpoints' / '2'} is unreadable")
  assert 'delete that step directory' in message
  state, _ = checkpointer.restore(_abstract(_state(0)), step=1)  # still fine
  assert int(state.step) == 1
