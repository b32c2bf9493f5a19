"""Multi-head dot-product attention with optional hyper-prompt key/value slots."""

import functools
from typing import Callable

import flax
from flax import linen as nn
from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp

from hyperprompt_jax.layers import dense

_MASKED = -1e10


@flax.struct.dataclass
class Prompts:
  """Extra key/value slots that one self-attention layer attends to.

  They live in the projected key/value space, carry no position bias and are
  visible to every query of their task, whatever the token mask says.

  The prompts of a whole stack lead with a `layers` axis; `layer(i)` (or
  `nn.scan`, see `scan_axes`) gives one layer's.

  Attributes:
    key: `[batch, l, heads, head_dim]`, each row's own task's slots (rows of
      one task); or, with `query_tasks`, `[tasks, l, heads, head_dim]`, every
      task's slots.
    value: same shape as `key`.
    query_tasks: None, or `[batch, q_len]` task id of every query (packed
      rows): each query sees the `l` slots of its own task only.
  """
  key: jnp.ndarray
  value: jnp.ndarray
  query_tasks: jnp.ndarray | None = None

  def same_task(self) -> jnp.ndarray:
    """`[batch, 1, q_len, tasks, 1]`: whether a task is the query's own."""
    tasks = jnp.arange(self.key.shape[0])
    return self.query_tasks[:, None, :, None, None] == tasks[:, None]

  def layer(self, index: int) -> 'Prompts':
    """One layer's prompts, out of a stack's."""
    return self.replace(key=self.key[index], value=self.value[index])

  def scan_axes(self) -> 'Prompts':
    """`nn.scan` in-axes of a stack's prompts: slots scanned over layers,
    the query tasks shared."""
    return Prompts(0, 0, nn.broadcast)


def _token_logits(query, key, mask, bias):
  """`[batch, heads, q_len, k_len]` logits; masked positions get `_MASKED`."""
  logits = jnp.einsum('bqhd,bkhd->bhqk', query, key)
  if bias is not None:
    logits = logits + bias.astype(logits.dtype)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.asarray(_MASKED, logits.dtype))
  return logits


def _prompt_logits(query, prompts: Prompts):
  """`[batch, heads, q_len, l]`: each query against its own task's slots.

  Packed rows score every task's slots and keep each query's own: a per-query
  gather of the slots would copy `[batch, q_len, l, heads, head_dim]` (wider
  than these logits by `head_dim`), whereas the all-task logits are one
  temporary `tasks` times the result that nothing keeps for the backward pass,
  at `tasks * l` extra multiply-adds per query and head.
  """
  key = prompts.key.astype(query.dtype)
  if prompts.query_tasks is None:
    return jnp.einsum('bqhd,bphd->bhqp', query, key)
  logits = jnp.einsum('bqhd,tphd->bhqtp', query, key)
  return jnp.where(prompts.same_task(), logits, 0).sum(axis=-2)


def _prompt_output(weights, prompts: Prompts, drop, dtype):
  """`[batch, q_len, heads, head_dim]` from weights `[batch, heads, q_len, l]`.

  `drop` applies attention dropout to the per-slot weights: in packed rows it
  sees every task's slots, so each task's slots are dropped independently,
  as slots of one softmax over all tasks would be.
  """
  value = prompts.value.astype(dtype)
  if prompts.query_tasks is None:
    return jnp.einsum('bhqp,bphd->bqhd', drop(weights), value)
  spread = jnp.where(prompts.same_task(), weights[..., None, :], 0)
  return jnp.einsum('bhqtp,tphd->bqhd', drop(spread), value)


@jax.custom_jvp
def _blockwise_softmax(*blocks):
  """One softmax over the last axes of `blocks` together, returned per block.

  Equals splitting `softmax(concatenate(blocks, -1))`, without the copy: one
  max and one normaliser are merged from the blocks' own.
  """
  top = functools.reduce(jnp.maximum, [b.max(-1, keepdims=True) for b in blocks])
  top = jax.lax.stop_gradient(top)
  unnormalized = [jnp.exp(b - top) for b in blocks]
  total = sum(u.sum(-1, keepdims=True) for u in unnormalized)
  return tuple(u / total for u in unnormalized)


@_blockwise_softmax.defjvp
def _blockwise_softmax_jvp(primals, tangents):
  # As jax.nn.softmax's: only the outputs are kept for the backward pass.
  weights = _blockwise_softmax(*primals)
  mean = sum((w * t).sum(-1, keepdims=True) for w, t in zip(weights, tangents))
  return weights, tuple(w * (t - mean) for w, t in zip(weights, tangents))


def _dropout(weights, rng, rate):
  """T5's attention dropout: the pattern is shared along the query axis.

  Args:
    weights: `[batch, heads, q_len, ...slots]`.
    rng: key of the pattern.
    rate: drop probability.
  """
  keep_prob = 1.0 - rate
  keep_shape = weights.shape[:2] + (1,) + weights.shape[3:]
  keep = jax.random.bernoulli(rng, keep_prob, keep_shape)
  return weights * (keep.astype(weights.dtype)
                    / jnp.asarray(keep_prob, weights.dtype))


def _prepend_slots(prompts: Prompts, key, value, mask, bias):
  """`[slots; tokens]` keys and values of rows of one task.

  The mask and bias widen to match: every slot visible, unbiased.
  """
  slots, length = prompts.key.shape[1], key.shape[1]
  key = jnp.concatenate([prompts.key.astype(key.dtype), key], axis=1)
  value = jnp.concatenate([prompts.value.astype(value.dtype), value], axis=1)
  widen = lambda x: [(0, 0)] * (x.ndim - 1) + [(slots, 0)]
  if mask is not None:
    mask = jnp.broadcast_to(mask, mask.shape[:-1] + (length,))
    mask = jnp.pad(mask, widen(mask), constant_values=True)
  if bias is not None:
    bias = jnp.pad(bias, widen(bias))
  return key, value, mask, bias


def dot_product_attention(query, key, value, mask=None, bias=None,
                          prompts=None, dropout_rng=None, dropout_rate=0.0,
                          deterministic=True, dtype=jnp.float32,
                          float32_logits=False, concatenate_prompts=False):
  """Softmax attention over `[prompts; keys]`.

  Prompt slots and tokens share one softmax but are scored and summed as two
  blocks, so keys, values and logits are never concatenated: rows of several
  tasks never widen by all tasks' slots, logits keep the tokens' width (TPU
  pads the last axis to 128 lanes), and a decoding step never copies its
  key/value cache. With `concatenate_prompts`, rows of one task (prompts
  without `query_tasks`) prepend their slots to the keys and values instead:
  one softmax, fewer and larger kernels, faster where dispatch dominates.

  Args:
    query: `[batch, q_len, heads, head_dim]`.
    key: `[batch, k_len, heads, head_dim]`.
    value: `[batch, k_len, heads, head_dim]`.
    mask: bool, broadcastable to `[batch, heads, q_len, k_len]` (True = may
      attend); prompts ignore it.
    bias: additive bias broadcastable to `[batch, heads, q_len, k_len]`
      (relative positions); prompts get none of it.
    prompts: optional `Prompts`.
    dropout_rng: key for attention dropout.
    dropout_rate: attention dropout rate.
    deterministic: disables dropout.
    dtype: dtype of the attention weights.
    float32_logits: compute logits and softmax in float32.
    concatenate_prompts: see above.

  Returns:
    `[batch, q_len, heads, head_dim]`.
  """
  if (prompts is not None and prompts.query_tasks is None
      and concatenate_prompts):
    key, value, mask, bias = _prepend_slots(prompts, key, value, mask, bias)
    prompts = None
  if float32_logits:
    query, key = query.astype(jnp.float32), key.astype(jnp.float32)
  blocks = [_token_logits(query, key, mask, bias)]
  if prompts is not None:
    blocks.append(_prompt_logits(query, prompts))
  weights = [w.astype(dtype) for w in _blockwise_softmax(*blocks)]

  dropping = not deterministic and dropout_rate > 0.0
  rngs = [dropout_rng] * len(blocks)
  if dropping and prompts is not None:
    rngs = list(jax.random.split(dropout_rng))
  drop = lambda w, rng: _dropout(w, rng, dropout_rate) if dropping else w
  out = jnp.einsum('bhqk,bkhd->bqhd', drop(weights[0], rngs[0]), value)
  if prompts is not None:
    out = out + _prompt_output(weights[1], prompts,
                               functools.partial(drop, rng=rngs[1]),
                               value.dtype)
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
    concatenate_prompts: prepend the slots of rows of one task to the keys
      and values (`dot_product_attention`), except in decoding steps.
  """

  num_heads: int
  head_dim: int
  dtype: jnp.dtype = jnp.float32
  dropout_rate: float = 0.0
  kernel_init: Callable = nn.initializers.variance_scaling(
      1.0, 'fan_in', 'normal')
  float32_logits: bool = False
  concatenate_prompts: bool = False

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

    if mask is not None:
      mask = mask.astype(bool)
    dropout_rng = None
    if not deterministic and self.dropout_rate > 0.0:
      dropout_rng = self.make_rng('dropout')
    x = dot_product_attention(
        query, key, value, mask=mask, bias=bias, prompts=prompts,
        dropout_rng=dropout_rng, dropout_rate=self.dropout_rate,
        deterministic=deterministic, dtype=self.dtype,
        float32_logits=self.float32_logits,
        concatenate_prompts=self.concatenate_prompts and not decode)
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
