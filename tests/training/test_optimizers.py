"""Learning-rate schedules against hand-computed values; Adafactor against
optax's, per layer of a `layers` axis against separate leaves, and (with
t5x) against t5x's Adafactor; the shardings of its statistics."""

import functools
import math

from flax import traverse_util
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import optax
import pytest

from hyperprompt_jax.checkpointing import scan_conversion
from hyperprompt_jax.sharding import mesh
from hyperprompt_jax.training import optimizers
import tiny_models as tm


def values(schedule: optimizers.Schedule, steps):
  fn = schedule()
  return [float(fn(np.int32(step))) for step in steps]


def test_constant_is_flat_and_linear_warmup_ramps():
  assert values(optimizers.Schedule('constant', 0.01), [0, 7, 1000]) == (
      pytest.approx([0.01, 0.01, 0.01]))
  ramp = optimizers.Schedule('constant', 0.01, warmup_steps=10,
                             linear_warmup=True)
  # base * min(1, (step + 1) / warmup)
  assert values(ramp, [0, 4, 9, 50]) == pytest.approx(
      [0.001, 0.005, 0.01, 0.01])


def test_rsqrt_is_flat_during_warmup_then_decays():
  schedule = optimizers.Schedule('rsqrt', 1.0, warmup_steps=100)
  # base / sqrt(max(step, warmup))
  assert values(schedule, [0, 50, 100, 400, 10000]) == pytest.approx(
      [0.1, 0.1, 0.1, 0.05, 0.01])
  ramp = optimizers.Schedule('rsqrt', 1.0, warmup_steps=100,
                             linear_warmup=True)
  assert values(ramp, [49, 400]) == pytest.approx([0.05, 0.05])


def test_cosine_warms_up_linearly_then_decays_to_final_fraction():
  schedule = optimizers.Schedule('cosine', 2.0, warmup_steps=10,
                                 decay_steps=110, final_fraction=0.1)
  # final + (base - final) * (1 + cos(pi * (step - warmup) / 100)) / 2
  quarter = 0.2 + (2.0 - 0.2) * 0.5 * (1 + math.cos(math.pi * 0.25))
  assert values(schedule, [0, 5, 10, 35, 60, 110, 500]) == pytest.approx(
      [0.0, 1.0, 2.0, quarter, 1.1, 0.2, 0.2])


@pytest.mark.parametrize('schedule, message', [
    (optimizers.Schedule('cosine'), 'needs decay_steps'),
    (optimizers.Schedule('linear'), 'unknown schedule'),
])
def test_bad_schedule_is_a_clear_error(schedule, message):
  with pytest.raises(ValueError, match=message):
    schedule()


@pytest.mark.parametrize('config', [
    optimizers.Adafactor(),
    optimizers.Adafactor(clipping_threshold=None, momentum=0.9,
                         weight_decay_rate=1e-3, min_dim_size_to_factor=16),
])
def test_adafactor_equals_optax_adafactor(config):
  """Our rsqrt Adafactor: optax.adafactor's state tree and updates."""
  params = {'factored': jnp.ones((128, 160)),
            'three_d': jnp.ones((4, 130, 140)),
            'small': jnp.ones((4, 8, 16)), 'bias': jnp.ones((7,))}
  ours = config(lambda step: 1e-2)
  reference = optax.adafactor(
      learning_rate=lambda step: 1e-2,
      min_dim_size_to_factor=config.min_dim_size_to_factor,
      decay_rate=config.decay_rate,
      clipping_threshold=config.clipping_threshold,
      multiply_by_parameter_scale=config.multiply_by_parameter_scale,
      momentum=config.momentum, weight_decay_rate=config.weight_decay_rate)
  states = [ours.init(params), reference.init(params)]
  assert jax.tree.structure(states[0]) == jax.tree.structure(states[1])
  for step in range(3):
    grads = jax.tree.map(
        lambda p, k: jax.random.normal(jax.random.PRNGKey(step * 10 + k),
                                       p.shape), params,
        {'factored': 0, 'three_d': 1, 'small': 2, 'bias': 3})
    (got, states[0]), (want, states[1]) = (
        jax.jit(tx.update)(grads, state, params)
        for tx, state in zip((ours, reference), states))
    for a, b in zip(jax.tree.leaves((got, states[0])),
                    jax.tree.leaves((want, states[1]))):
      np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-9)


def _stack(per_layer):
  """A `_per_layer` tree with its layers stacked: the encoder scanned, the
  prompts one leaf."""
  prompts = per_layer['prompts']
  return {**scan_conversion.scan_params({'encoder': per_layer['encoder']}),
          'prompts': {'prompts': jnp.stack([prompts[f'prompts_{i}']
                                            for i in range(len(prompts))])},
          'embedding': per_layer['embedding']}


def _per_layer():
  """Three layers of params, one leaf per layer (an unscanned stack and
  per-layer prompts), with their logical axes and those of `_stack`'s tree.
  The layers differ in scale, so that per-layer RMS differ from per-leaf
  ones."""
  rng = np.random.default_rng(0)
  shapes = {'kernel': (130, 140), 'scale': (16,), 'small': (4, 8)}
  axes = {'kernel': ('embed', 'mlp'), 'scale': ('embed',),
          'small': ('embed', 'mlp')}
  layer = lambda shape, i: jnp.asarray(rng.normal(size=shape) * (i + 1),
                                       jnp.float32)
  params = {
      'encoder': {f'layers_{i}': {k: layer(s, i) for k, s in shapes.items()}
                  for i in range(3)},
      'prompts': {f'prompts_{i}': layer((5, 20), i) for i in range(3)},
      'embedding': jnp.ones((130, 8))}
  prompt_axes = ('prompt_length', 'joined_kv')
  params_axes = {'encoder': {f'layers_{i}': axes for i in range(3)},
                 'prompts': {f'prompts_{i}': prompt_axes for i in range(3)},
                 'embedding': ('vocab', 'embed')}
  stacked_axes = {
      'encoder': {'layers': {k: ('layers', *v) for k, v in axes.items()}},
      'prompts': {'prompts': ('layers', *prompt_axes)},
      'embedding': ('vocab', 'embed')}
  return params, params_axes, stacked_axes


@pytest.mark.parametrize('clipping_threshold', [1.0, None])
def test_adafactor_takes_rms_per_layer_of_a_layers_axis(clipping_threshold):
  """A leaf with a `layers` axis (a scanned stack, per-layer prompts) gets
  the updates its layers get as separate leaves. The gradients are large,
  so that clipping acts."""
  params, params_axes, stacked_axes = _per_layer()
  stacked = _stack(params)
  config = optimizers.Adafactor(clipping_threshold=clipping_threshold)
  txs = [config(lambda step: 1e-2, axes)
         for axes in (params_axes, stacked_axes)]
  states = [txs[0].init(params), txs[1].init(stacked)]
  rng = np.random.default_rng(1)
  for step in range(3):
    grads = jax.tree.map(lambda p: jnp.asarray(
        100.0 * rng.normal(size=p.shape), jnp.float32), params)
    (updates, states[0]), (stacked_updates, states[1]) = (
        jax.jit(tx.update)(g, state, p) for tx, g, state, p in zip(
            txs, (grads, _stack(grads)), states, (params, stacked)))
    want = traverse_util.flatten_dict(_stack(updates))
    got = traverse_util.flatten_dict(stacked_updates)
    assert got.keys() == want.keys()
    for path, value in got.items():
      np.testing.assert_allclose(value, want[path], rtol=1e-5, atol=1e-9,
                                 err_msg=f'step {step} {path}')
  # Without the axes, one RMS per leaf: the stacked prompts' updates differ.
  per_leaf = config(lambda step: 1e-2)
  other, _ = jax.jit(per_leaf.update)(_stack(grads), states[1], stacked)
  assert not np.allclose(other['prompts']['prompts'],
                         stacked_updates['prompts']['prompts'], rtol=1e-2)


@pytest.mark.t5x
def test_adafactor_with_param_axes_updates_as_t5x_adafactor():
  """The `global` network's params after three steps of our Adafactor, given
  the params' logical axes, equal t5x's Adafactor with our factor rules:
  per-layer hypernetwork leaves included (`layers` is t5x's batch axis)."""
  from t5x import adafactor  # pylint: disable=g-import-not-at-top
  from hyperprompt_jax.t5x_integration import model as t5x_model  # pylint: disable=g-import-not-at-top
  variables = tm.variable_shapes(tm.transformer('global'))
  params = tm.init_params(tm.transformer('global'), tm.unpacked_batch())
  axes = mesh.logical_axes(variables['params_axes'])
  t5x_def = adafactor.Adafactor(
      learning_rate=1e-2, decay_rate=0.8, step_offset=0,
      logical_factor_rules=t5x_model.adafactor_logical_factor_rules())
  t5x_def.set_param_axes(axes)
  t5x_step = jax.jit(lambda opt, grads: opt.apply_gradient(grads))
  ours = optimizers.build_optimizer(
      optimizers.Adafactor(), optimizers.Schedule(base_learning_rate=1e-2),
      jax.tree.map(lambda _: True, params), axes)
  per_leaf = optimizers.Adafactor()(lambda step: 1e-2)

  @functools.partial(jax.jit, static_argnums=0)
  def our_step(tx, params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  t5x_opt = t5x_def.create(params)
  state, per_leaf_state = ours.init(params), per_leaf.init(params)
  ours_params = per_leaf_params = params
  rng = np.random.default_rng(0)
  for _ in range(3):
    grads = jax.tree.map(lambda p: jnp.asarray(
        10.0 * rng.normal(size=p.shape), jnp.float32), params)
    t5x_opt = t5x_step(t5x_opt, grads)
    ours_params, state = our_step(ours, ours_params, state, grads)
    per_leaf_params, per_leaf_state = our_step(per_leaf, per_leaf_params,
                                               per_leaf_state, grads)
  want = traverse_util.flatten_dict(t5x_opt.target)
  got = traverse_util.flatten_dict(ours_params)
  assert got.keys() == want.keys()
  for path, value in got.items():
    np.testing.assert_allclose(value, want[path], rtol=1e-5, atol=1e-7,
                               err_msg=str(path))
  # One RMS per leaf would not match t5x on the per-layer hypernetwork leaves.
  differs = [path for path, value in traverse_util.flatten_dict(
      per_leaf_params).items()
             if not np.allclose(value, want[path], rtol=1e-4, atol=1e-6)]
  assert differs and all('hyperprompt' in p for p in differs)


def test_factored_statistics_are_split_like_their_parameter():
  """Rows drop the parameter's largest axis and columns its second largest,
  each keeping the other's split; for a square kernel the shapes alone
  cannot tell rows from columns (the mistake this catches)."""
  params = {'square': jnp.zeros((16, 16)), 'wide': jnp.zeros((2, 8, 32)),
            'bias': jnp.zeros((32,))}
  devices = mesh.MeshConfig().make_mesh()
  specs = {'square': P('data', 'model'), 'wide': P(None, 'data', 'model'),
           'bias': P('model')}
  shardings = {k: NamedSharding(devices, s) for k, s in specs.items()}
  tx = optimizers.build_optimizer(
      optimizers.Adafactor(min_dim_size_to_factor=8), optimizers.Schedule(),
      jax.tree.map(lambda _: True, params))
  state = tx.init(params)
  got = optimizers.state_shardings(state, params, shardings, devices)
  is_factored = lambda x: isinstance(x, optax.FactoredState)
  [factored] = filter(is_factored, jax.tree.leaves(got, is_leaf=is_factored))
  spec = lambda field, name: tuple(getattr(factored, field)[name].spec)
  assert (spec('v_row', 'square'), spec('v_col', 'square')) == (
      ('data',), ('model',))
  assert (spec('v_row', 'wide'), spec('v_col', 'wide')) == (
      (None, 'data'), (None, 'model'))
  # Unfactored: the second moment is shaped like the bias and split like it.
  assert spec('v', 'bias') == ('model',)
  assert all(tuple(s.spec) == () for s in jax.tree.leaves(
      (factored.count, factored.v['square'], factored.v_row['bias'])))
