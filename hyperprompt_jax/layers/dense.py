"""Bias-free linear projection over several axes (T5's `DenseGeneral`)."""

from typing import Callable, Sequence

from flax import linen as nn
from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp
import numpy as np

Initializer = Callable[..., jnp.ndarray]


def _as_tuple(x: int | Sequence[int]) -> tuple[int, ...]:
  return tuple(x) if isinstance(x, Sequence) else (x,)


@jax.custom_vjp
def matmul(inputs: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
  """`[..., in]` x `[in, out]` -> `[..., out]`, with an explicit backward pass.

  The kernel gradient is written as `inputs^T @ grad` over the flattened
  leading axes. Autodiff's form (`grad^T @ inputs`, then a transpose) makes
  XLA:CPU transpose the wide output gradient inside its producer's loop, which
  made gated-GELU MLP gradients 2x slower at d_model 256. The values are the
  same either way.
  """
  return jnp.dot(inputs, kernel)


def _matmul_fwd(inputs, kernel):
  return matmul(inputs, kernel), (inputs, kernel)


def _matmul_bwd(residuals, grad):
  inputs, kernel = residuals
  flat_inputs = inputs.reshape(-1, inputs.shape[-1])
  flat_grad = grad.reshape(-1, grad.shape[-1])
  kernel_grad = jax.lax.dot_general(flat_inputs, flat_grad, (((0,), (0,)),
                                                             ((), ())))
  return jnp.dot(grad, kernel.T), kernel_grad.astype(kernel.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


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
    kernel = jnp.asarray(kernel, self.dtype)
    # The contracted axes go last and are flattened, as the kernel's rows.
    batch_axes = tuple(a for a in range(inputs.ndim) if a not in axis)
    inputs = jnp.asarray(inputs, self.dtype).transpose(batch_axes + axis)
    batch_dims = inputs.shape[:len(batch_axes)]
    flat = matmul(inputs.reshape(batch_dims + (-1,)), kernel)
    return flat.reshape(batch_dims + features)
