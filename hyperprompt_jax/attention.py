"""Multi-head dot-product attention with optional hyper-prompt key/value slots."""

import functools
from typing import Callable

import flax
from flax import linen as nn
from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp

from hyperprompt_jax import dense

_MASKED = -1e10


@flax.struct.dataclass
class Prompts:
  """Extra key/value slots that one self-attention layer prepends.

  They live in the projected key/value space and carry no position bias.

  Attributes:
    key: `[prompts, heads, head_dim]` shared by the batch, or
      `[batch, prompts, heads, head_dim]`.
    value: same shape as `key`.
    mask: `[batch, 1, q_len, prompts]` (1 = visible), or None when every query
      sees every slot.
  """
  key: jnp.ndarray
  value: jnp.ndarray
  mask: jnp.ndarray | None = None


def _prompt_equation(prompt_key: jnp.ndarray) -> str:
  return 'phd' if prompt_key.ndim == 3 else 'bphd'


def dot_product_attention(query, key, value, bias=None, prompts=None,
                          dropout_rng=None, dropout_rate=0.0,
                          deterministic=True, dtype=jnp.float32,
                          float32_logits=False):
  """Softmax attention over `[prompts; keys]`.

  Args:
    query: `[batch, q_len, heads, head_dim]`.
    key: `[batch, k_len, heads, head_dim]`.
    value: `[batch, k_len, heads, head_dim]`.
    bias: additive bias broadcastable to `[batch, heads, q_len, k_len]`
      (masks and relative positions); prompts get none of it.
    prompts: optional `Prompts` whose slots come first.
    dropout_rng: key for attention dropout.
    dropout_rate: attention dropout rate.
    deterministic: disables dropout.
    dtype: dtype of the attention weights.
    float32_logits: compute logits and softmax in float32.

  Returns:
    `[batch, q_len, heads, head_dim]`.
  """
  if float32_logits:
    query, key = query.astype(jnp.float32), key.astype(jnp.float32)
  logits = jnp.einsum('bqhd,bkhd->bhqk', query, key)
  if bias is not None:
    logits = logits + bias.astype(logits.dtype)
  num_prompts = 0
  if prompts is not None:
    eq = _prompt_equation(prompts.key)
    prompt_key = prompts.key.astype(query.dtype)
    prompt_logits = jnp.einsum(f'bqhd,{eq}->bhqp', query, prompt_key)
    if prompts.mask is not None:
      prompt_logits = jnp.where(prompts.mask > 0, prompt_logits,
                                jnp.asarray(_MASKED, prompt_logits.dtype))
    num_prompts = prompt_logits.shape[-1]
    logits = jnp.concatenate([prompt_logits, logits], axis=-1)

  weights = jax.nn.softmax(logits).astype(dtype)
  if not deterministic and dropout_rate > 0.0:
    keep_prob = 1.0 - dropout_rate
    # Like T5, the dropout pattern is shared along the query axis.
    keep_shape = weights.shape[:-2] + (1,) + weights.shape[-1:]
    keep = jax.random.bernoulli(dropout_rng, keep_prob, keep_shape)
    weights = weights * (keep.astype(dtype) / jnp.asarray(keep_prob, dtype))

  out = jnp.einsum('bhqk,bkhd->bqhd', weights[..., num_prompts:], value)
  if prompts is not None:
    eq = _prompt_equation(prompts.value)
    out = out + jnp.einsum(f'bhqp,{eq}->bqhd', weights[..., :num_prompts],
                           prompts.value.astype(value.dtype))
  return out


class MultiHeadDotProductAttention(nn.Module):
  """T5 attention: projections without biases, no 1/sqrt(d) on the logits.

  The scaling is folded into the query initializer, as in T5. Parameter names
  and logical axes match t5x's minimal T5.1.1 network.

  Attributes:
    num_heads: number of heads.
    head_dim: width of each head.
    dtype: computation dtype.
    dropout_rate: attention-weight dropout.
    kernel_init: initializer of the projection kernels.
    float32_logits: compute attention logits in float32.
  """

  num_heads: int
  head_dim: int
  dtype: jnp.dtype = jnp.float32
  dropout_rate: float = 0.0
  kernel_init: Callable = nn.initializers.variance_scaling(
      1.0, 'fan_in', 'normal')
  float32_logits: bool = False

  @nn.compact
  def __call__(self, inputs_q, inputs_kv, mask=None, bias=None,
               prompts: Prompts | None = None, *, decode: bool = False,
               deterministic: bool = False):
    """Attends from `inputs_q` to `[prompts; inputs_kv]`.

    Args:
      inputs_q: `[batch, q_len, embed]`.
      inputs_kv: `[batch, k_len, embed]`.
      mask: `[batch, 1, q_len, k_len]` (1 = may attend) or None.
      bias: `[1, heads, q_len, k_len]` relative position bias or None.
      prompts: hyper-prompt slots visible in addition to the keys.
      decode: autoregressive mode with a key/value cache of the full decode
        length; the first call (no cache yet) only allocates it.
      deterministic: disables dropout.

    Returns:
      `[batch, q_len, embed]`.
    """
    projection = functools.partial(
        dense.DenseGeneral, axis=-1, features=(self.num_heads, self.head_dim),
        kernel_axes=('embed', 'joined_kv'), dtype=self.dtype)
    depth_scaling = jnp.sqrt(self.head_dim).astype(jnp.float32)
    query_init = lambda *args: self.kernel_init(*args) / depth_scaling
    query = projection(kernel_init=query_init, name='query')(inputs_q)
    key = projection(kernel_init=self.kernel_init, name='key')(inputs_kv)
    value = projection(kernel_init=self.kernel_init, name='value')(inputs_kv)
    axes = ('batch', 'length', 'heads', 'kv')
    query = nn_partitioning.with_sharding_constraint(query, axes)
    key = nn_partitioning.with_sharding_constraint(key, axes)
    value = nn_partitioning.with_sharding_constraint(value, axes)

    if decode:
      key, value, mask, bias = self._update_cache(key, value, mask, bias)

    attention_bias = None
    if mask is not None:
      attention_bias = jnp.where(mask > 0, 0.0, _MASKED).astype(self.dtype)
    if bias is not None:
      attention_bias = bias if attention_bias is None else attention_bias + bias

    dropout_rng = None
    if not deterministic and self.dropout_rate > 0.0:
      dropout_rng = self.make_rng('dropout')
    x = dot_product_attention(
        query, key, value, bias=attention_bias, prompts=prompts,
        dropout_rng=dropout_rng, dropout_rate=self.dropout_rate,
        deterministic=deterministic, dtype=self.dtype,
        float32_logits=self.float32_logits)
    return dense.DenseGeneral(
        features=inputs_q.shape[-1], axis=(-2, -1),
        kernel_init=self.kernel_init, kernel_axes=('joined_kv', 'embed'),
        dtype=self.dtype, name='out')(x)

  def _update_cache(self, key, value, mask, bias):
    """Writes one step's key/value into the cache and returns the full cache.

    The allocating call (no cache yet) sees the full-length inputs and is
    returned unchanged; later calls see one position `[batch, 1, heads, kv]`.
    """
    initialized = self.has_variable('cache', 'cached_key')
    cached_key = self.variable('cache', 'cached_key', jnp.zeros, key.shape,
                               key.dtype)
    cached_value = self.variable('cache', 'cached_value', jnp.zeros,
                                 value.shape, value.dtype)
    cache_index = self.variable('cache', 'cache_index',
                                lambda: jnp.array(0, jnp.int32))
    if not initialized:
      return key, value, mask, bias
    batch, length = cached_key.value.shape[:2]
    if key.shape[1] != 1:
      raise ValueError(f'Cached decoding takes one position per call, got '
                       f'{key.shape[1]}.')
    index = cache_index.value
    zero = jnp.zeros((), jnp.int32)
    key = jax.lax.dynamic_update_slice(
        cached_key.value, key.astype(cached_key.value.dtype),
        (zero, index, zero, zero))
    value = jax.lax.dynamic_update_slice(
        cached_value.value, value.astype(cached_value.value.dtype),
        (zero, index, zero, zero))
    cached_key.value, cached_value.value = key, value
    cache_index.value = index + 1
    # The one query sees the positions written so far.
    step_mask = jnp.broadcast_to(jnp.arange(length) <= index,
                                 (batch, 1, 1, length))
    mask = step_mask if mask is None else jnp.logical_and(mask, step_mask)
    if bias is not None:
      bias = jax.lax.dynamic_slice_in_dim(bias, index, 1, axis=-2)
    return key, value, mask, bias
