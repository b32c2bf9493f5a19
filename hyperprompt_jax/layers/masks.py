"""Attention masks `[batch, 1, q_len, k_len]` (1 = may attend)."""

import jax.numpy as jnp


def make_attention_mask(query_input: jnp.ndarray, key_input: jnp.ndarray,
                        pairwise_fn=jnp.multiply,
                        dtype: jnp.dtype = jnp.float32) -> jnp.ndarray:
  """`pairwise_fn(query[b, q], key[b, k])` as a `[batch, 1, q, k]` mask."""
  mask = pairwise_fn(query_input[..., :, None], key_input[..., None, :])
  return mask[..., None, :, :].astype(dtype)


def make_causal_mask(tokens: jnp.ndarray,
                     dtype: jnp.dtype = jnp.float32) -> jnp.ndarray:
  """Lower-triangular mask for `tokens` `[batch, length]`."""
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[-1]), tokens.shape)
  return make_attention_mask(positions, positions, jnp.greater_equal, dtype)


def combine_masks(*masks: jnp.ndarray | None,
                  dtype: jnp.dtype = jnp.float32) -> jnp.ndarray | None:
  """Logical AND of the given masks; None if none is given."""
  masks = [m for m in masks if m is not None]
  if not masks:
    return None
  mask = masks[0]
  for other in masks[1:]:
    mask = jnp.logical_and(mask, other)
  return mask.astype(dtype)


def make_decoder_mask(decoder_target_tokens: jnp.ndarray,
                      dtype: jnp.dtype = jnp.float32,
                      decoder_segment_ids: jnp.ndarray | None = None):
  """Causal, padding and (when packed) same-segment mask of the decoder."""
  valid = decoder_target_tokens > 0
  segment_mask = None
  if decoder_segment_ids is not None:
    segment_mask = make_attention_mask(
        decoder_segment_ids, decoder_segment_ids, jnp.equal, dtype)
  return combine_masks(
      make_causal_mask(decoder_target_tokens, dtype),
      make_attention_mask(valid, valid, dtype=dtype),
      segment_mask, dtype=dtype)
