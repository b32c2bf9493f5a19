"""Prompt attention, slots prepended or scored as a second block, equals an
explicit softmax over concatenated slots."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperprompt_jax.layers import attention
from hyperprompt_jax.layers import masks

BATCH, Q_LEN, HEADS, HEAD_DIM, TASKS, SLOTS = 2, 6, 3, 4, 3, 2


def _normal(seed, shape):
  return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)


def _inputs(causal):
  """Query, key, value, bool mask `[b, 1, q, k]` and bias `[1, h, q, k]`."""
  qkv = [_normal(i, (BATCH, Q_LEN, HEADS, HEAD_DIM)) for i in range(3)]
  valid = jnp.arange(Q_LEN)[None] < jnp.array([[Q_LEN], [Q_LEN - 2]])
  mask = masks.make_attention_mask(valid, valid, dtype=bool)
  if causal:
    mask = masks.combine_masks(mask, masks.make_causal_mask(valid), dtype=bool)
  bias = _normal(3, (1, HEADS, Q_LEN, Q_LEN))
  return qkv, mask, bias


def _prompt_tables():
  """Every task's prompt keys and values, `[tasks, l, heads, head_dim]`."""
  return [_normal(4 + i, (TASKS, SLOTS, HEADS, HEAD_DIM)) for i in range(2)]


def _reference(query, key, value, mask, bias, prompt_key, prompt_value,
               visible):
  """Softmax over explicitly concatenated `[prompts; tokens]`.

  Bias and mask apply to the token slots only; `visible` `[b, q, slots]` says
  which prompt slots each query sees.
  """
  prompt_logits = jnp.einsum('bqhd,bphd->bhqp', query, prompt_key)
  prompt_logits = jnp.where(visible[:, None], prompt_logits, -1e10)
  token_logits = jnp.einsum('bqhd,bkhd->bhqk', query, key) + bias
  token_logits = jnp.where(mask, token_logits, -1e10)
  weights = jax.nn.softmax(
      jnp.concatenate([prompt_logits, token_logits], -1), axis=-1)
  return jnp.einsum('bhqk,bkhd->bqhd', weights, jnp.concatenate(
      [prompt_value, value], axis=1))


def _unpacked_case(tables):
  """Rows of tasks 2 and 0: the rows' own slots, and the reference's."""
  row_tasks = jnp.array([2, 0])
  keys, values = (t[row_tasks] for t in tables)
  visible = jnp.ones((BATCH, Q_LEN, SLOTS), bool)
  return attention.Prompts(keys, values), (keys, values, visible)


def _packed_case(tables):
  """Rows packing several tasks: every task's slots, each query its own."""
  query_tasks = jnp.array([[0, 0, 1, 1, 1, 2], [2, 2, 2, 1, 0, 0]])
  flat = [jnp.broadcast_to(t.reshape((1, TASKS * SLOTS) + t.shape[2:]),
                           (BATCH, TASKS * SLOTS) + t.shape[2:])
          for t in tables]
  slot_tasks = jnp.repeat(jnp.arange(TASKS), SLOTS)
  visible = query_tasks[..., None] == slot_tasks
  return (attention.Prompts(*tables, query_tasks=query_tasks),
          (*flat, visible))


# Case -> (prompts and reference, concatenate_prompts): rows of one task
# take both paths (the second is a decoding step's); rows of several tasks
# are always scored as two blocks.
CASES = {'unpacked': (_unpacked_case, True),
         'unpacked_two_blocks': (_unpacked_case, False),
         'packed': (_packed_case, True)}


def _attention(case, tables, *args, **kwargs):
  """`dot_product_attention` with the case's prompts made from `tables`."""
  make, concatenate = CASES[case]
  prompts, _ = make(tables)
  return attention.dot_product_attention(
      *args, prompts=prompts, concatenate_prompts=concatenate, **kwargs)


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('case', sorted(CASES))
def test_prompt_attention_equals_concatenated_reference(case, causal):
  (query, key, value), mask, bias = _inputs(causal)

  def ours(q, k, v, tables):
    return _attention(case, tables, q, k, v, mask=mask, bias=bias)

  def reference(q, k, v, tables):
    _, reference_prompts = CASES[case][0](tables)
    return _reference(q, k, v, mask, bias, *reference_prompts)

  args = (query, key, value, _prompt_tables())
  np.testing.assert_allclose(ours(*args), reference(*args), rtol=1e-6,
                             atol=1e-6)
  # Both paths differentiate as the reference, prompts too.
  cotangent = _normal(9, (BATCH, Q_LEN, HEADS, HEAD_DIM))
  # Compiled: op-by-op differentiation spends its time dispatching.
  grads = lambda fn: jax.tree.leaves(jax.jit(jax.grad(
      lambda *a: jnp.sum(fn(*a) * cotangent), argnums=(0, 1, 2, 3)))(*args))
  for got, want in zip(grads(ours), grads(reference)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('case', sorted(CASES))
def test_attention_dropout_is_unbiased_with_prompts(case):
  (query, key, value), mask, bias = _inputs(causal=True)
  attend = lambda **kw: _attention(case, _prompt_tables(), query, key, value,
                                   mask=mask, bias=bias, **kw)
  rngs = jax.random.split(jax.random.PRNGKey(0), 4000)
  mean = jax.jit(lambda rngs: jnp.mean(jax.vmap(lambda r: attend(
      dropout_rng=r, dropout_rate=0.5, deterministic=False))(rngs), axis=0))(
          rngs)
  exact = attend()
  np.testing.assert_allclose(mean, exact, atol=0.1)
