"""T5's RMS layer norm: no mean subtraction, no bias."""

from flax import linen as nn
from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp


class LayerNorm(nn.Module):
  """Scales `x` `[..., embed]` by the inverse root mean square of its last axis.

  Statistics are computed in float32 whatever `dtype` is.
  """

  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = jnp.asarray(x, jnp.float32)
    mean_square = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    y = jnp.asarray(x * jax.lax.rsqrt(mean_square + self.epsilon), self.dtype)
    scale = nn_partitioning.param_with_axes(
        'scale', nn.initializers.ones, (x.shape[-1],), jnp.float32,
        axes=('embed',))
    return y * jnp.asarray(scale, self.dtype)
