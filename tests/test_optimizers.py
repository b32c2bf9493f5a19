"""Learning-rate schedules against hand-computed values; Adafactor against
optax's."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hyperprompt_jax import optimizers


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
