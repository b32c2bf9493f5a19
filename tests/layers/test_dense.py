"""DenseGeneral's explicit backward pass equals autodiff of a plain matmul."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperprompt_jax.layers import dense


@pytest.mark.parametrize('dtype, tolerance', [(jnp.float32, 1e-5),
                                              (jnp.bfloat16, 2e-2)])
def test_matmul_gradients_equal_autodiff(dtype, tolerance):
  inputs = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 8), dtype)
  kernel = jax.random.normal(jax.random.PRNGKey(1), (8, 6), dtype)
  weights = jax.random.normal(jax.random.PRNGKey(2), (3, 5, 6), jnp.float32)

  def loss(matmul, x, k):
    return jnp.sum(matmul(x, k).astype(jnp.float32) * weights)

  grad = jax.jit(jax.grad(loss, argnums=(1, 2)), static_argnums=0)
  ours, reference = grad(dense.matmul, inputs, kernel), grad(jnp.dot, inputs,
                                                              kernel)
  for got, want in zip(ours, reference):
    assert got.dtype == want.dtype == dtype
    np.testing.assert_allclose(np.float32(got), np.float32(want),
                               rtol=tolerance, atol=tolerance)


def test_dense_general_contracts_several_axes_like_tensordot():
  layer = dense.DenseGeneral(features=(2, 3), axis=(-2, -1))
  inputs = jax.random.normal(jax.random.PRNGKey(0), (4, 5, 6))
  params = layer.init(jax.random.PRNGKey(1), inputs)
  kernel = params['params']['kernel']
  assert kernel.shape == (30, 6)
  np.testing.assert_allclose(
      layer.apply(params, inputs),
      jnp.tensordot(inputs, kernel.reshape(5, 6, 2, 3), axes=((1, 2), (0, 1))),
      rtol=1e-5, atol=1e-5)
