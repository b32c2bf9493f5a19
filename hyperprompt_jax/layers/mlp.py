"""T5 feed-forward block; T5.1.1 uses the gated-GELU form."""

import functools
import operator
from typing import Callable, Sequence

from flax import linen as nn
from flax.linen import partitioning as nn_partitioning
import jax.numpy as jnp

from hyperprompt_jax.layers import dense


def _activation(name: str | Callable) -> Callable:
  if callable(name):
    return name
  return (lambda x: x) if name == 'linear' else getattr(nn, name)


class MlpBlock(nn.Module):
  """`[batch, length, embed]` -> `[batch, length, embed]` through `mlp` units.

  With `activations=('gelu', 'linear')` this is T5.1.1's gated GELU:
  `wo(gelu(wi_0 x) * wi_1 x)`; a single activation gives one `wi` kernel.
  """

  intermediate_dim: int = 2048
  activations: Sequence[str | Callable] = ('relu',)
  kernel_init: Callable = nn.initializers.variance_scaling(
      1.0, 'fan_in', 'truncated_normal')
  intermediate_dropout_rate: float = 0.1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: jnp.ndarray, deterministic: bool = False):
    hidden = []
    for i, act in enumerate(self.activations):
      name = 'wi' if len(self.activations) == 1 else f'wi_{i}'
      h = dense.DenseGeneral(
          self.intermediate_dim, dtype=self.dtype, kernel_init=self.kernel_init,
          kernel_axes=('embed', 'mlp'), name=name)(inputs)
      hidden.append(_activation(act)(h))
    x = functools.reduce(operator.mul, hidden)
    x = nn.Dropout(self.intermediate_dropout_rate, broadcast_dims=(-2,))(
        x, deterministic=deterministic)
    x = nn_partitioning.with_sharding_constraint(x, ('batch', 'length', 'mlp'))
    return dense.DenseGeneral(
        inputs.shape[-1], dtype=self.dtype, kernel_init=self.kernel_init,
        kernel_axes=('mlp', 'embed'), name='wo')(x)
