"""Dropout against t5x's minimal T5 conventions, in attention, in the network
and in HyperPrompt's bottlenecks; evaluation is deterministic."""

import functools

from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperprompt_jax.conditioning import prompt_generator
from hyperprompt_jax.layers import attention
from hyperprompt_jax.model import network
import tiny_models as tm

RATE = 0.3
KEEP = 1.0 - RATE
BATCH, HEADS, Q_LEN, K_LEN, TASKS, SLOTS = 2, 2, 5, 6, 2, 3
# One value dimension per slot of every task and per token: with one-hot
# values the attention output is the dropped weights themselves.
HEAD_DIM = TASKS * SLOTS + K_LEN
ROW_TASKS = np.array([1, 0])
PACKED_TASKS = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])


def _normal(seed, shape):
  return np.random.RandomState(seed).normal(size=shape) / np.sqrt(HEAD_DIM)


def _one_hot_values():
  """Token values `[b, k, h, d]`, every task's slot values `[T, l, h, d]`."""
  columns = np.eye(HEAD_DIM, dtype=np.float32)
  slots = columns[:TASKS * SLOTS].reshape(TASKS, SLOTS, 1, HEAD_DIM)
  tokens = columns[TASKS * SLOTS:].reshape(1, K_LEN, 1, HEAD_DIM)
  return (np.broadcast_to(tokens, (BATCH, K_LEN, HEADS, HEAD_DIM)),
          np.broadcast_to(slots, (TASKS, SLOTS, HEADS, HEAD_DIM)))


def _query_tasks(case):
  """`[b, q]` task of every query, or None without prompts."""
  if case == 'tokens':
    return None
  if case == 'packed':
    return PACKED_TASKS
  return np.broadcast_to(ROW_TASKS[:, None], (BATCH, Q_LEN))


def _reference_weights(query, key, slot_keys, query_tasks):
  """NumPy softmax over `[every task's slots; tokens]`: `[b, h, q, T l + k]`.

  A query sees its own task's slots only (none without prompts).
  """
  token_logits = np.einsum('bqhd,bkhd->bhqk', query, key)
  slot_logits = np.einsum('bqhd,tphd->bhqtp', query, slot_keys)
  if query_tasks is None:
    visible = np.zeros((BATCH, Q_LEN, TASKS), bool)
  else:
    visible = query_tasks[..., None] == np.arange(TASKS)
  slot_logits = np.where(visible[:, None, :, :, None], slot_logits, -np.inf)
  logits = np.concatenate(
      [slot_logits.reshape(BATCH, HEADS, Q_LEN, TASKS * SLOTS), token_logits],
      axis=-1)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  return weights / weights.sum(-1, keepdims=True)


def _dropped_weights(case, rng):
  """Dropped and reference weights, both `[b, h, q, T l + k]`."""
  query = _normal(0, (BATCH, Q_LEN, HEADS, HEAD_DIM))
  key = _normal(1, (BATCH, K_LEN, HEADS, HEAD_DIM))
  slot_keys = _normal(2, (TASKS, SLOTS, HEADS, HEAD_DIM))
  value, slot_values = _one_hot_values()
  query_tasks = _query_tasks(case)
  prompts = None
  if case == 'packed':
    prompts = attention.Prompts(slot_keys, slot_values, query_tasks)
  elif query_tasks is not None:
    prompts = attention.Prompts(slot_keys[ROW_TASKS], slot_values[ROW_TASKS])
  out = attention.dot_product_attention(
      *(jnp.asarray(x, jnp.float32) for x in (query, key, value)),
      prompts=prompts, dropout_rng=rng, dropout_rate=RATE,
      deterministic=False, concatenate_prompts=case == 'concatenated')
  return (np.asarray(out).transpose(0, 2, 1, 3),
          _reference_weights(query, key, slot_keys, query_tasks))


def _keep_mask(dropped, undropped):
  """`dropped / undropped * keep_prob`, asserting that each value was dropped
  (0) or scaled by 1 / keep_prob (1), and that both happened; NaN where
  `undropped` is too small to tell (0 after a ReLU, say)."""
  seen = np.abs(undropped) > 1e-3 * np.abs(undropped).max()
  keep = np.where(seen, dropped / np.where(seen, undropped, 1) * KEEP, np.nan)
  mask = np.round(keep)
  np.testing.assert_allclose(keep[seen], mask[seen], atol=1e-3)
  assert set(np.unique(mask[seen])) == {0.0, 1.0}
  return mask


def _shared_pattern(mask, axis):
  """`mask` without `axis`, asserting it is the same all along `axis`
  (positions that are NaN aside)."""
  pattern = np.fmax.reduce(mask, axis=axis)  # fmax and fmin skip NaN.
  np.testing.assert_array_equal(np.fmin.reduce(mask, axis=axis), pattern)
  return pattern


def _some_differ(mask, other):
  """Whether two keep masks differ somewhere both are seen (NaN compares
  False)."""
  return np.any(np.abs(mask - other) == 1)


@pytest.mark.parametrize('case',
                         ['tokens', 'unpacked', 'concatenated', 'packed'])
def test_attention_dropout_pattern_is_shared_along_queries(case):
  """t5x's keep mask `[batch, heads, 1, k_len]`, slots included.

  Catches: `attention._dropout` drawing a mask of the full weights shape
  (a pattern per query), or dropping without the 1 / keep_prob scaling.
  """
  pattern = _shared_pattern(
      _keep_mask(*_dropped_weights(case, jax.random.PRNGKey(3))), axis=2)
  assert _some_differ(pattern[0], pattern[1])
  assert _some_differ(pattern[:, 0], pattern[:, 1])
  # Every row and head drops some keys and keeps others.
  assert np.all(np.fmin.reduce(pattern, axis=-1) == 0)
  assert np.all(np.fmax.reduce(pattern, axis=-1) == 1)
  if case != 'tokens':
    slots = pattern[..., :TASKS * SLOTS]
    assert np.any(slots == 0) and np.any(slots == 1)


def test_attention_dropout_draws_t5x_mask():
  """Without prompts, the mask is t5x's draw,
  `bernoulli(rng, keep_prob, [batch, heads, 1, k_len])`, so a t5x network
  and ours drop the same weights for the same rng.

  Catches: a mask of another shape (the full weights shape) or another draw.
  """
  rng = jax.random.PRNGKey(4)
  pattern = _shared_pattern(_keep_mask(*_dropped_weights('tokens', rng)), 2)
  t5x_keep = jax.random.bernoulli(rng, KEEP, (BATCH, HEADS, 1, K_LEN))
  np.testing.assert_array_equal(pattern[..., TASKS * SLOTS:],
                                np.asarray(t5x_keep[:, :, 0], np.float32))


def _transformer(variant, rate=RATE):
  """Dropout `rate` in the backbone and in HyperPrompt."""
  # One layer per stack holds every kind of dropout, at half the compile time.
  return network.Transformer(
      tm.t5_config(dropout_rate=rate, num_encoder_layers=1,
                   num_decoder_layers=1),
      tm.hp_config(variant, dropout_rate=rate))


def _params_and_batch(variant):
  batch = tm.unpacked_batch()
  # Dropout adds no parameters: those of the dropout-free network serve all.
  return tm.init_params(_transformer(variant, 0.0), batch), batch


def _is_generator(module, method_name):
  return (isinstance(module, prompt_generator.HyperPromptGenerator)
          and method_name == '__call__')


@functools.lru_cache(maxsize=None)
def _outputs(variant):
  """Passes of the network with dropout, for the dropout rngs 0, 1 and 0.

  Returns:
    `{'train' | 'eval': (logits [3, batch, len, vocab], prompts)}`, prompts
    being each stack's generator outputs with the same leading axis (`{}`
    for variants without them), and `'dropout_free'`: the logits of the same
    network without dropout, on the same parameters.
  """
  module = _transformer(variant)
  params, batch = _params_and_batch(variant)

  def run(params, rng, enable_dropout):
    logits, state = module.apply(
        {'params': params}, **batch, enable_dropout=enable_dropout,
        rngs={'dropout': rng}, mutable=['intermediates'],
        capture_intermediates=_is_generator)
    return logits, state.get('intermediates', {})

  # One compiled program for all passes: compiling dominates the run time.
  @jax.jit
  def passes(params, rngs):
    outputs = {mode: jax.vmap(functools.partial(
        run, params, enable_dropout=mode == 'train'))(rngs)
               for mode in ('train', 'eval')}
    outputs['dropout_free'] = _transformer(variant, 0.0).apply(
        {'params': params}, **batch, enable_dropout=False)
    return outputs

  rngs = jnp.stack([jax.random.PRNGKey(seed) for seed in (0, 1, 0)])
  return jax.tree.map(np.asarray, passes(params, rngs))


def _differ(a, b):
  return any(not np.allclose(x, y, atol=1e-6)
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _by_rng(tree):
  """The passes of rngs 0, 1 and 0 again, out of the leading axis."""
  return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(3)]


VARIANTS = ('share', 'global', 'adapter')


@pytest.mark.parametrize('variant', VARIANTS)
def test_training_dropout_follows_the_rng(variant):
  """Training logits (dropout in backbone and HyperPrompt) are a function of
  the dropout rng: the same rng gives the same logits, another rng others."""
  first, other, again = _by_rng(_outputs(variant)['train'][0])
  np.testing.assert_array_equal(first, again)
  assert _differ(first, other)


@pytest.mark.parametrize('variant', VARIANTS)
def test_evaluation_is_deterministic(variant):
  """With `enable_dropout=False` any dropout rng gives exactly the logits of
  the dropout-free network on the same parameters.

  Catches: a dropout that ignores `deterministic` (e.g. the prompt
  generator's, always dropping).
  """
  outputs = _outputs(variant)
  for logits in _by_rng(outputs['eval'][0]):
    np.testing.assert_array_equal(logits, outputs['dropout_free'])


@pytest.mark.parametrize('variant', ['share', 'global'])
def test_hyperprompt_dropout_acts_on_prompts_in_training(variant):
  """The generated prompts of both stacks depend on the dropout rng in
  training, and not in evaluation.

  Catches: `HyperPromptConfig.dropout_rate` not reaching the prompt
  generator, or the network passing it `deterministic=True` in training.
  """
  outputs = _outputs(variant)
  train, evaluation = outputs['train'][1], outputs['eval'][1]
  assert set(train) == {'encoder', 'decoder'}
  first, other, _ = _by_rng(train)
  for stack in train:
    assert _differ(first[stack], other[stack]), stack
  first, other, _ = _by_rng(evaluation)
  assert not _differ(first, other)


def test_share_dropout_drops_bottleneck_units():
  """`P_K = U_K dropout(relu(D_K P_tau))`: solving the training prompts for
  the bottleneck gives NumPy's `relu(D_K P_tau)` with each unit either
  dropped or scaled by 1 / keep_prob.

  Catches: dropout moved off the bottleneck (onto the prompts or the global
  prompts) or unscaled.
  """
  hp = _params_and_batch('share')[0]['encoder']['hyperprompt']
  prompts = _by_rng(_outputs('share')['train'][1])[0]
  keys = prompts['encoder']['hyperprompt']['__call__'][0][0]
  layers = keys.shape[0]
  keys = keys.reshape(layers, -1, keys.shape[-2] * keys.shape[-1])
  hidden = np.maximum(np.einsum('Tld,Mdb->MTlb', hp['global_prompts'],
                                hp['key_down']), 0)
  hidden = hidden.reshape(layers, -1, hidden.shape[-1])
  for m in range(layers):
    # U_K is [b, n] with b < n and full row rank: the bottleneck is unique.
    dropped = np.linalg.lstsq(np.asarray(hp['key_up'][m]).T, keys[m].T,
                              rcond=None)[0].T
    _keep_mask(dropped, hidden[m])
    np.testing.assert_allclose(dropped[hidden[m] == 0], 0, atol=1e-4)


@functools.lru_cache(maxsize=None)
def _dropout_calls(variant):
  """`{path: (inputs, outputs)}` of every `nn.Dropout` of a training pass."""
  module = _transformer(variant)
  params, batch = _params_and_batch(variant)

  @jax.jit
  def run(params, rng):
    calls = {}
    def record(next_fun, args, kwargs, context):
      outputs = next_fun(*args, **kwargs)
      if isinstance(context.module, nn.Dropout):
        calls['/'.join(context.module.path)] = (args[0], outputs)
      return outputs
    with nn.intercept_methods(record):
      module.apply({'params': params}, **batch, enable_dropout=True,
                   rngs={'dropout': rng})
    return calls

  return jax.tree.map(np.asarray, run(params, jax.random.PRNGKey(0)))


def test_backbone_dropout_is_shared_along_length():
  """t5x's minimal T5: every dropout of `[batch, length, embed]` activations
  (embeddings, residual branches, MLP hidden, decoder output) draws a mask
  `[batch, 1, features]` shared along the length axis, except the encoder's
  last (after `encoder_norm`), drawn per position.

  Catches: `network._dropout` (or the MLP's dropout) without
  `broadcast_dims=(-2,)`.
  """
  calls = {path: call for path, call in _dropout_calls('adapter').items()
           if 'adapter' not in path}
  # An encoder layer's 3 dropouts, a decoder layer's 4, and each stack's
  # embedding and output dropouts.
  assert len(calls) == 3 + 4 + 4
  residual = [p for p in calls if p.split('/')[-2].startswith('layers_')]
  assert len(residual) == 2 + 3
  for path, (inputs, outputs) in calls.items():
    mask = _keep_mask(outputs, inputs)
    if path == 'encoder/Dropout_1':
      with pytest.raises(AssertionError):
        _shared_pattern(mask, axis=1)
      continue
    pattern = _shared_pattern(mask, axis=1)
    # Not shared along rows or features.
    assert _some_differ(pattern[0], pattern[1]), path
    for row in pattern:
      assert _some_differ(row, row[0]), path


def test_adapter_dropout_drops_bottleneck_units():
  """Each adapter's dropout, in both stacks and at both positions, drops
  bottleneck units or scales them by 1 / keep_prob in training.

  Catches: `HyperPromptConfig.dropout_rate` not reaching the adapters, or
  the layers passing them `deterministic=True` in training.
  """
  calls = {path: call for path, call in _dropout_calls('adapter').items()
           if 'adapter' in path}
  assert sorted(calls) == [
      f'{stack}/layers_0/{position}_adapter/Dropout_0'
      for stack in ('decoder', 'encoder') for position in ('attention', 'mlp')]
  for inputs, outputs in calls.values():
    assert inputs.shape[-1] == tm.hp_config('adapter').adapter_dim
    _keep_mask(outputs, inputs)
