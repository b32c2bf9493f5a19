"""`layerwise.scan_with_updates` against backpropagation through the
unrolled layers, written out here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperprompt_jax.model import layerwise
from hyperprompt_jax.training import optimizers
from hyperprompt_jax.training import trainer as trainer_lib
import tiny_models as tm

LAYERS, WIDTH = 3, 4
LR, DECAY = 0.1, 0.9


def _layer(params, x, context, index, rng):
  """`tanh(x W + b + c) * (index + 1)`: the index checks that each layer
  gets its own (the scan slices the rest)."""
  del rng
  bias, = context
  return jnp.tanh(x @ params['w'] + params['b'] + bias) * (index + 1.0)


def _update(grads, params, state):
  """SGD with a decaying average of squared gradients (a statistic per
  element, shaped like the parameters) and a shared step count."""
  new_state = {
      'count': state['count'],
      'v': jax.tree.map(lambda v, g: DECAY * v + g * g, state['v'], grads)}
  return jax.tree.map(lambda p, g: p - LR * g, params, grads), new_state


def _inputs():
  keys = jax.random.split(jax.random.PRNGKey(0), 5)
  params = {'w': jax.random.normal(keys[0], (LAYERS, WIDTH, WIDTH)) / 2,
            'b': jax.random.normal(keys[1], (LAYERS, WIDTH))}
  state = {'count': jnp.asarray(3, jnp.int32),
           'v': jax.tree.map(jnp.ones_like, params)}
  x = jax.random.normal(keys[2], (2, WIDTH))
  context = (jax.random.normal(keys[3], (WIDTH,)),)
  target = jax.random.normal(keys[4], (2, WIDTH))
  return params, state, x, context, target


def _loss(y, target):
  return jnp.sum((y - target) ** 2)


def _reference(params, x, context, target):
  """Gradients of the loss through the layers unrolled, as plain
  backpropagation takes them."""
  def loss(params, x, context):
    for index in range(LAYERS):
      x = _layer(jax.tree.map(lambda a, i=index: a[i], params), x, context,
                 index, None)
    return _loss(x, target)
  return jax.grad(loss, argnums=(0, 1, 2))(params, x, context)


def test_backward_pass_updates_each_layer_with_its_gradient():
  """The cotangents of the stack's parameters and statistics are their
  updated values, and those of the input and the shared context are the
  true gradients. Catches a layer updated before the layers below it took
  their gradients (backpropagation through new weights), layers paired
  with another's gradient or statistics, and a context gradient that
  misses some layers."""
  params, state, x, context, target = _inputs()

  def loss(params, state, x, context):
    y = layerwise.scan_with_updates(_layer, _update, params, state, x,
                                    context, None)
    return _loss(y, target)

  new_params, new_state, dx, dcontext = jax.grad(
      loss, argnums=(0, 1, 2, 3), allow_int=True)(params, state, x, context)
  grads, want_dx, want_dcontext = _reference(params, x, context, target)

  for name in params:
    np.testing.assert_allclose(new_params[name],
                               params[name] - LR * grads[name], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(new_state['v'][name],
                               DECAY * state['v'][name] + grads[name] ** 2,
                               rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(dcontext[0], want_dcontext[0], rtol=1e-5,
                             atol=1e-6)
  assert new_state['count'].dtype == jax.dtypes.float0
  assert not np.allclose(grads['w'][0], 0)


def test_forward_pass_is_the_stack():
  """Without differentiation the output is the layers applied in order."""
  params, state, x, context, _ = _inputs()
  y = layerwise.scan_with_updates(_layer, _update, params, state, x, context,
                                  None)
  want = x
  for index in range(LAYERS):
    want = _layer(jax.tree.map(lambda a, i=index: a[i], params), want,
                  context, index, None)
  np.testing.assert_allclose(y, want, rtol=1e-6)


def test_split_and_join_params_are_inverse():
  """The scanned stacks' `layers` subtrees come out whole and go back in
  place; unscanned stacks and other parameters stay in the rest."""
  params = {'encoder': {'layers': {'w': 1}, 'encoder_norm': {'scale': 2}},
            'decoder': {'layers_0': {'w': 3}},
            'token_embedder': {'embedding': 4}}
  rest, stacks = layerwise.split_params(params)
  assert stacks == {'encoder': {'w': 1}}
  assert rest == {'encoder': {'encoder_norm': {'scale': 2}},
                  'decoder': {'layers_0': {'w': 3}},
                  'token_embedder': {'embedding': 4}}
  assert layerwise.join_params(rest, stacks) == params


@pytest.mark.parametrize('bindings, problem', [
    ({'num_microbatches': 2}, 'num_microbatches=2'),
    ({'tune': 'conditioning'}, "tune='conditioning'"),
    ({'compute_dtype_gradients': True}, 'compute_dtype_gradients'),
])
def test_settings_it_cannot_apply_to_are_refused(bindings, problem):
  """One-line errors that name the setting and its fix."""
  config = trainer_lib.TrainerConfig(layerwise_updates=True, **bindings)
  model = tm.model('global', scan_layers=True)
  with pytest.raises(ValueError, match=f'layerwise_updates: {problem}'):
    config.check_layerwise(model, optimizers.Adafactor())
  with pytest.raises(ValueError, match='layers are not scanned'):
    trainer_lib.TrainerConfig(layerwise_updates=True).check_layerwise(
        tm.model('global'), optimizers.Adafactor())
  with pytest.raises(ValueError, match='global gradient-norm clip'):
    trainer_lib.TrainerConfig(layerwise_updates=True).check_layerwise(
        model, optimizers.AdamW())
