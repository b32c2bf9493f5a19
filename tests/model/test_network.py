"""Shapes, parameter tree, task conditioning and packing of the network."""

import dataclasses

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperprompt_jax.conditioning import hyperprompt_config
from hyperprompt_jax.model import losses
import tiny_models as tm


@pytest.mark.parametrize('variant', hyperprompt_config.VARIANTS)
def test_forward_shapes(variant):
  module = tm.transformer(variant)
  batch = tm.unpacked_batch()
  params = tm.init_params(module, batch)
  logits = tm.apply(module, params, batch)
  assert logits.shape == (2, 5, tm.VOCAB)
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  encoded = jax.eval_shape(lambda: module.apply(
      {'params': params}, jnp.asarray(batch['encoder_input_tokens']),
      encoder_task_ids=jnp.asarray(batch['encoder_task_ids']),
      enable_dropout=False, method=module.encode))
  extra = 3 if variant == 'prompt_tuning' else 0
  assert encoded.shape == (2, 7 + extra, 16)


def _t5_1_1_tree(cfg):
  """t5x's minimal T5.1.1 parameter tree: path -> (shape, logical axes)."""
  d, n, f, v = cfg.emb_dim, cfg.num_heads * cfg.head_dim, cfg.mlp_dim, cfg.vocab_size
  attn = lambda p: {
      f'{p}/query/kernel': ((d, n), ('embed', 'joined_kv')),
      f'{p}/key/kernel': ((d, n), ('embed', 'joined_kv')),
      f'{p}/value/kernel': ((d, n), ('embed', 'joined_kv')),
      f'{p}/out/kernel': ((n, d), ('joined_kv', 'embed'))}
  mlp = lambda p: {
      f'{p}/wi_0/kernel': ((d, f), ('embed', 'mlp')),
      f'{p}/wi_1/kernel': ((d, f), ('embed', 'mlp')),
      f'{p}/wo/kernel': ((f, d), ('mlp', 'embed'))}
  norm = lambda p: {f'{p}/scale': ((d,), ('embed',))}
  tree = {'token_embedder/embedding': ((v, d), ('vocab', 'embed')),
          'decoder/logits_dense/kernel': ((d, v), ('embed', 'vocab'))}
  for stack in ('encoder', 'decoder'):
    tree[f'{stack}/relpos_bias/rel_embedding'] = (
        (cfg.num_heads, 32), ('heads', 'relpos_buckets'))
    tree.update(norm(f'{stack}/{stack}_norm'))
  for i in range(cfg.num_encoder_layers):
    p = f'encoder/layers_{i}'
    tree.update({**norm(f'{p}/pre_attention_layer_norm'), **attn(
        f'{p}/attention'), **norm(f'{p}/pre_mlp_layer_norm'), **mlp(f'{p}/mlp')})
  for i in range(cfg.num_decoder_layers):
    p = f'decoder/layers_{i}'
    tree.update({
        **norm(f'{p}/pre_self_attention_layer_norm'),
        **attn(f'{p}/self_attention'),
        **norm(f'{p}/pre_cross_attention_layer_norm'),
        **attn(f'{p}/encoder_decoder_attention'),
        **norm(f'{p}/pre_mlp_layer_norm'), **mlp(f'{p}/mlp')})
  return tree


def test_none_variant_has_the_plain_t5_1_1_tree():
  module = tm.transformer('none')
  variables = tm.variable_shapes(module)
  params = traverse_util.flatten_dict(variables['params'], sep='/')
  axes = traverse_util.flatten_dict(variables['params_axes'], sep='/')
  got = {path: (value.shape, axes[path + '_axes'].names)
         for path, value in params.items()}
  assert got == _t5_1_1_tree(module.config)
  assert len(axes) == len(params)


@pytest.mark.parametrize('variant', hyperprompt_config.VARIANTS)
def test_every_parameter_has_logical_axes(variant):
  variables = tm.variable_shapes(tm.transformer(variant))
  params = traverse_util.flatten_dict(variables['params'], sep='/')
  axes = traverse_util.flatten_dict(variables['params_axes'], sep='/')
  for path, value in params.items():
    names = axes[path + '_axes'].names
    assert len(names) == value.ndim, path


@pytest.mark.parametrize('variant', hyperprompt_config.VARIANTS)
def test_output_depends_on_task_id_only_when_conditioned(variant):
  module = tm.transformer(variant)
  batch = tm.unpacked_batch(task_ids=(0, 1))
  params = tm.init_params(module, batch)
  other = dict(batch, encoder_task_ids=batch['encoder_task_ids'] + 1,
               decoder_task_ids=batch['decoder_task_ids'] + 1)
  diff = np.abs(tm.apply(module, params, batch) -
                tm.apply(module, params, other))
  if variant == 'none':
    assert diff.max() == 0.0
  else:
    assert diff[:, :4].max() > 1e-4


@pytest.mark.parametrize('stack', ['encoder', 'decoder'])
def test_stack_switches_limit_conditioning(stack):
  module = tm.transformer('global', encoder=stack == 'encoder',
                          decoder=stack == 'decoder')
  batch = tm.unpacked_batch()
  params = tm.init_params(module, batch)
  assert 'hyperprompt' in params[stack]
  other_stack = 'decoder' if stack == 'encoder' else 'encoder'
  assert 'hyperprompt' not in params[other_stack]


def _example_losses(logits, targets, segments):
  token_loss, _ = losses.per_token_cross_entropy(logits, targets)
  token_loss = np.asarray(token_loss) * (targets > 0)
  return [token_loss[segments == s].sum() for s in (1, 2)]


@pytest.mark.parametrize('variant', tm.LAYER_PROMPT_VARIANTS +
                         tm.ADAPTER_VARIANTS + ('none',))
def test_packed_and_unpacked_losses_match(variant):
  module = tm.transformer(variant)
  batch = tm.unpacked_batch(task_ids=(2, 0))
  batch['decoder_input_tokens'][:, 0] = 0
  params = tm.init_params(module, batch)
  unpacked = tm.apply(module, params, batch)
  unpacked_losses = _example_losses(
      unpacked, batch['decoder_target_tokens'],
      np.array([[1] * 5, [2] * 5]))
  packed = tm.packed_batch(batch)
  packed_logits = tm.apply(module, params, packed)
  packed_losses = _example_losses(packed_logits, packed['decoder_target_tokens'],
                                  packed['decoder_segment_ids'])
  np.testing.assert_allclose(packed_losses, unpacked_losses, rtol=1e-5)


@pytest.mark.parametrize('variant', tm.LAYER_PROMPT_VARIANTS +
                         tm.ADAPTER_VARIANTS)
def test_rows_of_one_task_are_routed_by_row_with_equal_outputs(variant):
  """Packed rows of one task: routing by row (`one_task_per_row`) gives the
  per-token routing's logits with less work."""
  by_token = tm.transformer(variant)
  by_row = tm.transformer(variant, one_task_per_row=True)
  batch = tm.unpacked_batch(task_ids=(2, 2))
  batch['decoder_input_tokens'][:, 0] = 0
  params = tm.init_params(by_token, batch)
  packed = {k: np.concatenate([v, v]) for k, v in tm.packed_batch(batch).items()}
  packed['encoder_task_ids'][1] = packed['decoder_task_ids'][1] = 1
  np.testing.assert_allclose(tm.apply(by_row, params, packed),
                             tm.apply(by_token, params, packed),
                             rtol=1e-5, atol=1e-5)
  features = {k: jnp.asarray(v) for k, v in packed.items()}

  def flops(module):
    forward = jax.jit(lambda p: module.apply({'params': p}, **features,
                                             enable_dropout=False))
    return forward.lower(params).compile().cost_analysis()['flops']

  assert flops(by_row) < flops(by_token)


@pytest.mark.parametrize('variant', tm.CONDITIONED_VARIANTS)
def test_row_task_ids_equal_token_task_ids_on_unpacked_rows(variant):
  """`[batch]` row ids route unpacked rows as `[batch, len]` token ids do."""
  module = tm.transformer(variant)
  batch = tm.unpacked_batch(task_ids=(2, 0))
  params = tm.init_params(module, batch)
  by_row = dict(batch, encoder_task_ids=np.array([2, 0]),
                decoder_task_ids=np.array([2, 0]))
  np.testing.assert_array_equal(tm.apply(module, params, by_row),
                                tm.apply(module, params, batch))


def test_row_task_ids_are_rejected_where_packed_rows_mix_tasks():
  module = tm.transformer('global')
  batch = tm.unpacked_batch(task_ids=(2, 0))
  params = tm.init_params(module, batch)
  packed = dict(tm.packed_batch(batch), encoder_task_ids=np.array([2]),
                decoder_task_ids=np.array([2]))
  with pytest.raises(ValueError, match=r'must be \[batch, length\]'):
    tm.apply(module, params, packed)
  by_row = tm.transformer('global', one_task_per_row=True)
  assert np.all(np.isfinite(tm.apply(by_row, params, packed)))


@pytest.mark.parametrize('variant', tm.LAYER_PROMPT_VARIANTS)
def test_packed_segments_see_nothing_of_each_other(variant):
  """Segment 1 (task 2) is blind to segment 2's tokens and task-0 prompts."""
  module = tm.transformer(variant)
  batch = tm.unpacked_batch(task_ids=(2, 0))
  params = tm.init_params(module, batch)
  packed = tm.packed_batch(batch)
  first = packed['decoder_segment_ids'][0] == 1
  second_enc = packed['encoder_segment_ids'][0] == 2

  def first_segment_logits(p, enc_tokens):
    logits = tm.apply(module, p, dict(packed, encoder_input_tokens=enc_tokens))
    return logits[0, first]

  # Gradients of segment 1 with respect to every conditioning parameter:
  # entries belonging to task 0 (segment 2's task) must be exactly zero.
  grads = jax.grad(lambda p: first_segment_logits(p, packed[
      'encoder_input_tokens']).sum())(params)
  for stack in ('encoder', 'decoder'):
    for name, g in grads[stack]['hyperprompt'].items():
      g = np.asarray(g)
      task_axis = {'global_prompts': 0, 'task_embedding': 0}.get(name)
      if name in ('key_prompts', 'value_prompts', ) or (
          variant == 'sep' and name.endswith(('_down', '_up'))):
        task_axis = 1
      if task_axis is not None:
        assert np.all(np.take(g, 0, axis=task_axis) == 0), (stack, name)
        assert np.any(np.take(g, 2, axis=task_axis) != 0), (stack, name)
  # And changing segment 2's input tokens leaves segment 1 unchanged.
  changed = packed['encoder_input_tokens'].copy()
  changed[0, second_enc] = (changed[0, second_enc] + 5) % tm.VOCAB + 1
  np.testing.assert_array_equal(
      first_segment_logits(params, packed['encoder_input_tokens']),
      first_segment_logits(params, changed))


@pytest.mark.parametrize('variant', ['none', 'global', 'direct'])
@pytest.mark.parametrize('pack', [False, True])
def test_decoder_is_causal_with_prompts(variant, pack):
  module = tm.transformer(variant)
  batch = tm.unpacked_batch(task_ids=(1, 2))
  batch['decoder_input_tokens'][:, 0] = 0
  params = tm.init_params(module, batch)
  if pack:
    batch = tm.packed_batch(batch)
  logits = tm.apply(module, params, batch)
  changed = {k: v.copy() for k, v in batch.items()}
  changed['decoder_input_tokens'][:, 3:] = (
      changed['decoder_input_tokens'][:, 3:] % (tm.VOCAB - 2)) + 2
  changed_logits = tm.apply(module, params, changed)
  np.testing.assert_array_equal(logits[:, :3], changed_logits[:, :3])
  assert np.abs(logits[:, 3:] - changed_logits[:, 3:]).max() > 1e-5


def test_first_decoder_position_sees_decoder_prompts():
  """Prompts ignore the causal mask: position 0 already attends to them."""
  module = tm.transformer('direct', encoder=False)
  batch = tm.unpacked_batch()
  params = tm.init_params(module, batch)
  grads = jax.grad(lambda p: tm.apply(module, p, batch)[:, 0].sum())(params)
  hp_grads = grads['decoder']['hyperprompt']
  assert np.abs(np.asarray(hp_grads['key_prompts'])).max() > 0


def test_prompt_tuning_rejects_packed_inputs():
  module = tm.transformer('prompt_tuning')
  batch = tm.unpacked_batch()
  params = tm.init_params(module, batch)
  with pytest.raises(ValueError, match='pack=False'):
    tm.apply(module, params, tm.packed_batch(batch))


def test_missing_task_ids_give_a_clear_error():
  module = tm.transformer('global')
  batch = tm.unpacked_batch()
  params = tm.init_params(module, batch)
  del batch['encoder_task_ids']
  with pytest.raises(ValueError, match='encoder_task_ids'):
    tm.apply(module, params, batch)


def test_unknown_variant_is_rejected():
  with pytest.raises(ValueError, match='Unknown HyperPrompt variant'):
    tm.hp_config('hyper')


@pytest.mark.t5x
def test_none_variant_equals_t5x_minimal_t5_1_1():
  """Same initial values and the same outputs, dropout included, as t5x's."""
  from t5x.examples.t5 import network as t5x_network  # pylint: disable=g-import-not-at-top
  ours = tm.transformer('none')
  config = tm.t5_config(dropout_rate=0.1)
  ours = ours.clone(config=config)
  # Our fields beyond t5x's (remat, scan, prompt slots, lookup sharding)
  # are at their defaults: t5x's layout.
  theirs_fields = {f.name for f in dataclasses.fields(t5x_network.T5Config)}
  ours_only = {f.name: f.default for f in dataclasses.fields(config)
               if f.name not in theirs_fields}
  assert ours_only == {'remat_policy': 'none', 'scan_layers': False,
                       'concatenate_prompt_slots': False,
                       'batch_sharded_lookup': False}
  assert all(getattr(config, k) == v for k, v in ours_only.items())
  theirs = t5x_network.Transformer(t5x_network.T5Config(
      **{k: v for k, v in dataclasses.asdict(config).items()
         if k in theirs_fields}))
  batch = {k: jnp.asarray(v) for k, v in tm.unpacked_batch().items()
           if 'task' not in k}
  rng = jax.random.PRNGKey(0)
  our_params = ours.init(rng, **batch, enable_dropout=False)['params']
  their_params = theirs.init(rng, **batch, enable_dropout=False)['params']
  jax.tree.map(np.testing.assert_array_equal, our_params, their_params)
  dropout = {'dropout': jax.random.PRNGKey(1)}
  np.testing.assert_array_equal(
      ours.apply({'params': our_params}, **batch, rngs=dropout),
      theirs.apply({'params': our_params}, **batch, rngs=dropout))
