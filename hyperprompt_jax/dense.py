"""Bias-free linear projection over several axes (T5's `DenseGeneral`)."""

from typing import Callable, Sequence

from flax import linen as nn
from flax.linen import partitioning as nn_partitioning
import jax.numpy as jnp
import numpy as np

Initializer = Callable[..., jnp.ndarray]


def _as_tuple(x: int | Sequence[int]) -> tuple[int, ...]:
  return tuple(x) if isinstance(x, Sequence) else (x,)


class DenseGeneral(nn.Module):
  """Contracts `axis` of the input with a kernel producing `features`.

  The kernel is stored flattened as `[prod(in_dims), prod(features)]`, the
  layout of T5.1.1 checkpoints, with `kernel_axes` naming those two axes.

  Attributes:
    features: output feature dims, e.g. `(heads, head_dim)`.
    axis: input axes to contract.
    dtype: computation dtype (the kernel is stored in float32).
    kernel_init: initializer of the flattened kernel.
    kernel_axes: logical axis names of the flattened kernel.
  """

  features: int | Sequence[int]
  axis: int | Sequence[int] = -1
  dtype: jnp.dtype = jnp.float32
  kernel_init: Initializer = nn.initializers.variance_scaling(
      1.0, 'fan_in', 'truncated_normal')
  kernel_axes: tuple[str, ...] = ()

  @nn.compact
  def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
    features = _as_tuple(self.features)
    axis = tuple(a % inputs.ndim for a in _as_tuple(self.axis))
    in_dims = tuple(inputs.shape[a] for a in axis)
    kernel = nn_partitioning.param_with_axes(
        'kernel', self.kernel_init,
        (int(np.prod(in_dims)), int(np.prod(features))), jnp.float32,
        axes=self.kernel_axes)
    kernel = jnp.asarray(kernel, self.dtype).reshape(in_dims + features)
    inputs = jnp.asarray(inputs, self.dtype)
    return jnp.tensordot(inputs, kernel, axes=(axis, tuple(range(len(axis)))))
