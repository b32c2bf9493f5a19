"""T5 relative position biases, shared by all layers of a stack."""

from typing import Callable

from flax import linen as nn
from flax.linen import partitioning as nn_partitioning
import jax.numpy as jnp
import numpy as np


def relative_position_bucket(relative_position: np.ndarray,
                             bidirectional: bool = True,
                             num_buckets: int = 32,
                             max_distance: int = 128) -> np.ndarray:
  """Buckets `key_pos - query_pos` as T5 does.

  Half the buckets (all of them when causal) hold exact small distances, the
  rest grow logarithmically up to `max_distance`; with `bidirectional` the
  upper half of the buckets is for keys after the query.

  Args:
    relative_position: int array of `key_position - query_position`.
    bidirectional: whether keys after the query get their own buckets.
    num_buckets: number of buckets.
    max_distance: distance from which everything shares the last bucket.

  Returns:
    int32 array of the same shape with values in `[0, num_buckets)`.
  """
  distance = -relative_position
  bucket = np.zeros_like(relative_position, dtype=np.int32)
  if bidirectional:
    num_buckets //= 2
    bucket += (distance < 0).astype(np.int32) * num_buckets
    distance = np.abs(distance)
  else:
    distance = np.maximum(distance, 0)
  max_exact = num_buckets // 2
  log_ratio = (np.log(distance.astype(np.float32) / max_exact
                      + np.finfo(np.float32).eps)
               / np.log(max_distance / max_exact))
  large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(np.int32)
  large = np.minimum(large, num_buckets - 1)
  return bucket + np.where(distance < max_exact, distance, large)


class RelativePositionBiases(nn.Module):
  """Per-head attention bias `[1, heads, q_len, k_len]` from bucketed offsets."""

  num_buckets: int
  max_distance: int
  num_heads: int
  dtype: jnp.dtype
  embedding_init: Callable = nn.initializers.variance_scaling(
      1.0, 'fan_avg', 'uniform')

  @nn.compact
  def __call__(self, q_len: int, k_len: int, bidirectional: bool = True):
    offsets = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]
    buckets = relative_position_bucket(
        offsets, bidirectional, self.num_buckets, self.max_distance)
    table = nn_partitioning.param_with_axes(
        'rel_embedding', self.embedding_init,
        (self.num_heads, self.num_buckets), jnp.float32,
        axes=('heads', 'relpos_buckets'))
    # A one-hot contraction instead of a gather partitions cleanly under SPMD.
    one_hot = jnp.asarray(
        buckets[None] == np.arange(self.num_buckets)[:, None, None], self.dtype)
    bias = jnp.einsum('hn,nqk->hqk', jnp.asarray(table, self.dtype), one_hot)
    return bias[None]
