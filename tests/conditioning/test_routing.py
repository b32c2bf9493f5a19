"""Routing of prompts, adapters and input prompts to rows and tokens."""

import jax.numpy as jnp
import numpy as np
import pytest

from hyperprompt_jax.conditioning import adapter
from hyperprompt_jax.conditioning import hyperprompt_config
from hyperprompt_jax.conditioning import routing

TOKEN_IDS = np.array([[2, 2, 0, 0], [1, 1, 1, 0]], np.int32)  # [batch, len]


def _hp(one_task_per_row):
  return hyperprompt_config.HyperPromptConfig(
      variant='global', num_tasks=3, one_task_per_row=one_task_per_row)


@pytest.mark.parametrize('packed,one_task_per_row,expected', [
    (False, False, [2, 1]), (True, True, [2, 1]), (True, False, TOKEN_IDS)])
def test_stack_task_ids_routes_by_row_unless_rows_mix_tasks(
    packed, one_task_per_row, expected):
  """Rows of one task are routed by their first token's task; only packed
  rows that may mix tasks keep a task per token."""
  ids = routing.stack_task_ids(TOKEN_IDS, 'encoder_task_ids', packed,
                               _hp(one_task_per_row))
  np.testing.assert_array_equal(ids, expected)
  assert ids.dtype == jnp.int32


@pytest.mark.parametrize('ids,packed,message', [
    (None, False, 'needs `encoder_task_ids`'),
    (np.zeros((2, 3, 4), np.int32), False, r'must be \[batch\] or'),
    (np.array([2, 1]), True, 'Packed rows may mix tasks')])
def test_stack_task_ids_errors_name_the_feature(ids, packed, message):
  with pytest.raises(ValueError, match=message):
    routing.stack_task_ids(ids, 'encoder_task_ids', packed, _hp(False))


def test_decoding_takes_each_rows_task_from_the_encoder_ids():
  batch = {'encoder_task_ids': TOKEN_IDS,
           'decoder_task_ids': np.zeros_like(TOKEN_IDS)}  # All padding.
  np.testing.assert_array_equal(routing.decoding_task_ids(batch), [2, 1])
  assert routing.decoding_task_ids({}) is None


def test_route_prompts_gathers_each_rows_task_per_layer():
  # keys[m, t] = 10 m + t, so each routed slot names its layer and task.
  keys = (10 * np.arange(2)[:, None] + np.arange(3)[None]).astype(
      np.float32)[:, :, None, None, None] * np.ones((1, 1, 4, 2, 3))
  prompts = routing.route_prompts(keys, -keys, jnp.array([2, 0]))
  assert prompts.key.shape == (2, 2, 4, 2, 3) and prompts.query_tasks is None
  np.testing.assert_array_equal(prompts.key[:, :, 0, 0, 0], [[2, 0], [12, 10]])
  np.testing.assert_array_equal(prompts.value, -prompts.key)
  mixed = routing.route_prompts(keys, -keys, jnp.asarray(TOKEN_IDS))
  assert mixed.key.shape == keys.shape
  np.testing.assert_array_equal(mixed.query_tasks, TOKEN_IDS)


def test_route_adapters_groups_tokens_by_task():
  down = np.zeros((1, 2, 3, 4, 5), np.float32)
  up = np.zeros((1, 2, 3, 5, 4), np.float32)
  kernels = adapter.AdapterKernels(down, up)
  rows = routing.route_adapters(kernels, jnp.array([2, 0]))
  assert rows.down.shape == (1, 2, 2, 4, 5) and rows.order is None
  tokens = routing.route_adapters(kernels, jnp.asarray(TOKEN_IDS))
  flat = TOKEN_IDS.reshape(-1)
  np.testing.assert_array_equal(tokens.group_sizes, [3, 3, 2])
  # Tokens sorted by task, ties in their own order.
  np.testing.assert_array_equal(flat[np.asarray(tokens.order)],
                                [0, 0, 0, 1, 1, 1, 2, 2])
  np.testing.assert_array_equal(tokens.order, [2, 3, 7, 4, 5, 6, 0, 1])


def test_route_input_prompts_gives_each_row_its_tasks_prompt():
  prompts = np.arange(3)[:, None, None] * np.ones((3, 2, 4))
  rows = routing.route_input_prompts(jnp.asarray(prompts), jnp.array([1, 2, 1]))
  np.testing.assert_array_equal(rows[:, 0, 0], [1, 2, 1])
