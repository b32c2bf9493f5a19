"""Token embedding table shared by the encoder and the decoder."""

from typing import Callable

from flax import linen as nn
from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp


class Embed(nn.Module):
  """Maps token ids `[batch, length]` to vectors `[batch, length, features]`.

  Attributes:
    num_embeddings: vocabulary size.
    features: embedding width (`emb_dim`).
    dtype: dtype of the looked-up vectors.
    attend_dtype: dtype of `attend` (float32 keeps tied logits stable).
    embedding_init: initializer of the `[vocab, embed]` table.
    one_hot: gather through a one-hot matmul, which SPMD partitions well when
      the vocabulary axis is sharded.
  """

  num_embeddings: int
  features: int
  dtype: jnp.dtype = jnp.float32
  attend_dtype: jnp.dtype | None = None
  embedding_init: Callable[..., jnp.ndarray] = nn.initializers.normal(1.0)
  one_hot: bool = False

  def setup(self):
    self.embedding = nn_partitioning.param_with_axes(
        'embedding', self.embedding_init,
        (self.num_embeddings, self.features), jnp.float32,
        axes=('vocab', 'embed'))

  def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
    if not jnp.issubdtype(inputs.dtype, jnp.integer):
      raise ValueError(f'Token ids must be integers, got {inputs.dtype}.')
    table = jnp.asarray(self.embedding, self.dtype)
    if self.one_hot:
      return jax.nn.one_hot(inputs, self.num_embeddings, dtype=self.dtype) @ table
    return table[inputs]

  def attend(self, query: jnp.ndarray) -> jnp.ndarray:
    """Logits `[..., vocab]` of `query` `[..., features]` against the table."""
    dtype = self.attend_dtype or self.dtype
    return jnp.dot(query.astype(dtype), jnp.asarray(self.embedding, dtype).T)
