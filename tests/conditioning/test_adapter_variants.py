"""The adapter and hyperformer variants: routing, decoding, counts, restoring."""

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperprompt_jax.checkpointing import checkpoint_import
from hyperprompt_jax.conditioning import adapter
from hyperprompt_jax.conditioning import param_counts
from hyperprompt_jax.conditioning import routing
from hyperprompt_jax.sharding import partitioning
from hyperprompt_jax.training import trainer
import tiny_models as tm

VARIANTS = tm.ADAPTER_VARIANTS


def _flat(tree):
  return traverse_util.flatten_dict(tree)


def test_packed_routing_applies_each_tokens_own_task_kernels():
  """Sorted grouped matmuls equal a per-token reference, and row gathering."""
  rng = np.random.RandomState(0)
  batch, length, d, a, tasks = 2, 5, 6, 3, 4
  kernels = adapter.AdapterKernels(
      jnp.asarray(rng.randn(1, 2, tasks, d, a), jnp.float32),
      jnp.asarray(rng.randn(1, 2, tasks, a, d), jnp.float32))
  x = jnp.asarray(rng.randn(batch, length, d), jnp.float32)
  task_ids = np.array([[3, 3, 0, 0, 2], [1, 1, 1, 3, 3]], np.int32)
  layer = adapter.TaskAdapter()
  packed = layer.apply({}, x, routing.route_adapters(
      kernels, jnp.asarray(task_ids)).layer(0).position('mlp'))
  down, up = np.asarray(kernels.down[0, 1]), np.asarray(kernels.up[0, 1])
  expected = np.stack([np.stack([
      x[b, i] + np.maximum(x[b, i] @ down[t], 0) @ up[t]
      for i, t in enumerate(row)]) for b, row in enumerate(task_ids)])
  np.testing.assert_allclose(packed, expected, rtol=1e-5, atol=1e-5)
  # Rows of one task each: row gathering gives the same as packed routing.
  one_task = np.array([[2] * length, [0] * length], np.int32)
  outputs = [layer.apply({}, x, routing.route_adapters(
      kernels, jnp.asarray(ids)).layer(0).position('attention'))
             for ids in (one_task[:, 0], one_task)]
  np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('variant', VARIANTS)
def test_task_id_changes_only_its_own_segment(variant):
  """In a packed row, changing segment 2's task changes segment 2 only."""
  module = tm.transformer(variant)
  batch = tm.unpacked_batch(task_ids=(2, 0))
  params = tm.init_params(module, batch)
  packed = tm.packed_batch(batch)
  other = dict(packed)
  for stack in ('encoder', 'decoder'):
    segments = packed[f'{stack}_segment_ids']
    other[f'{stack}_task_ids'] = np.where(segments == 2, 1,
                                          packed[f'{stack}_task_ids'])
  logits, other_logits = (np.asarray(tm.apply(module, params, b))
                          for b in (packed, other))
  first = packed['decoder_segment_ids'][0] == 1
  np.testing.assert_array_equal(logits[0, first], other_logits[0, first])
  assert np.abs(logits[0, ~first] - other_logits[0, ~first]).max() > 1e-4


def test_gradients_reach_only_the_batch_tasks_adapters():
  module = tm.transformer('adapter')
  batch = tm.unpacked_batch(task_ids=(2, 0))
  params = tm.init_params(module, batch)
  packed = tm.packed_batch(batch)
  grads = jax.grad(lambda p: tm.apply(module, p, packed).sum())(params)
  for stack in ('encoder', 'decoder'):
    for name in ('down', 'up'):
      g = np.abs(np.asarray(grads[stack]['adapters'][name]))
      # [layers, positions, tasks, ...]: task 1 is in no segment.
      assert g[:, :, 1].max() == 0, (stack, name)
      assert g[:, :, 0].max() > 0 and g[:, :, 2].max() > 0, (stack, name)


@pytest.mark.parametrize('variant', VARIANTS)
def test_fresh_adapters_are_close_to_the_identity(variant):
  """Near-zero up-projections: task adapters barely move a fresh model."""
  batch = tm.unpacked_batch()
  conditioned = tm.transformer(variant)
  params = tm.init_params(conditioned, batch)
  plain = tm.transformer('none')
  backbone = {k: v for k, v in _flat(params).items()
              if not partitioning.is_conditioning_param(k)}
  logits = np.asarray(tm.apply(conditioned, params, batch))
  plain_logits = np.asarray(tm.apply(
      plain, traverse_util.unflatten_dict(backbone), batch))
  change = np.abs(logits - plain_logits).max()
  assert 0 < change < 0.05 * np.abs(plain_logits).max()


@pytest.mark.parametrize('variant', VARIANTS)
@pytest.mark.parametrize('overrides', [
    {}, {'num_tasks': 7, 'adapter_dim': 9}, {'encoder': False},
    {'decoder': False, 'task_embed_dim': 3, 'task_mlp_dim': 11}])
def test_counts_axes_and_tree_of_the_new_parameters(variant, overrides):
  module = tm.transformer(variant, **overrides)
  variables = tm.variable_shapes(module)
  params = _flat(variables['params'])
  axes = _flat(variables['params_axes'])
  new = {k: v for k, v in params.items()
         if partitioning.is_conditioning_param(k)}
  assert sum(int(np.prod(v.shape)) for v in new.values()) == (
      param_counts.conditioning_param_count(module.hyperprompt, module.config))
  # The backbone is exactly variant none's; the new parameters sit in one
  # `adapters` module per conditioned stack.
  plain = _flat(tm.variable_shapes(tm.transformer('none'))['params'])
  assert {k: v.shape for k, v in params.items() if k not in new} == {
      k: v.shape for k, v in plain.items()}
  stacks = {k[0] for k in new}
  assert stacks == {s for s in ('encoder', 'decoder')
                    if overrides.get(s, True)}
  assert all(k[1] == 'adapters' for k in new)
  rules = dict(partitioning.logical_axis_rules())
  for path, value in new.items():
    names = axes[path[:-1] + (path[-1] + '_axes',)].names
    assert len(names) == value.ndim, path
    assert all(n in rules for n in names), path


def test_hyperformer_grows_sublinearly_with_tasks_and_layers():
  cfg = tm.t5_config(num_encoder_layers=12, num_decoder_layers=12,
                     emb_dim=768, num_heads=12, head_dim=64)
  def extra(variant, tasks, layers=12):
    config = cfg.replace(num_encoder_layers=layers, num_decoder_layers=layers)
    return param_counts.conditioning_param_count(
        tm.hp_config(variant, num_tasks=tasks, adapter_dim=24,
                     task_embed_dim=32, task_mlp_dim=64), config)
  # A task costs hyperformer one embedding per stack; adapter pays full
  # adapters for every layer and position.
  assert extra('hyperformer', 9) - extra('hyperformer', 8) == 2 * 32
  assert extra('adapter', 9) - extra('adapter', 8) == 2 * 12 * 2 * 2 * 768 * 24
  assert extra('hyperformer', 8, 24) - extra('hyperformer', 8) == 2 * 12 * 32


@pytest.mark.parametrize('variant', VARIANTS)
def test_frozen_backbone_trains_exactly_the_new_parameters(variant):
  params = tm.variable_shapes(tm.transformer(variant))['params']
  mask = _flat(trainer.trainable_mask(params, 'conditioning'))
  trainable = {k for k, m in mask.items() if m}
  assert trainable and trainable == {k for k in mask if 'adapters' in k}


@pytest.mark.parametrize('variant', VARIANTS)
def test_restoring_a_plain_t5_tree_leaves_only_the_new_parameters_fresh(
    variant):
  batch = tm.unpacked_batch()
  initial = jax.tree.map(np.asarray,
                         tm.init_params(tm.transformer(variant), batch))
  plain = jax.tree.map(np.asarray, tm.init_params(tm.transformer('none'),
                                                  batch, seed=1))
  merged = _flat(checkpoint_import.merge_pretrained(initial, plain))
  plain, initial = _flat(plain), _flat(initial)
  assert merged.keys() == initial.keys()
  for path, value in merged.items():
    expected = initial[path] if 'adapters' in path else plain[path]
    np.testing.assert_array_equal(value, expected, err_msg=str(path))
  assert merged.keys() - plain.keys() == {k for k in merged if 'adapters' in k}
