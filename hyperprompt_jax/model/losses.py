"""Token cross-entropy with label smoothing and T5's z-loss."""

import jax
import jax.numpy as jnp


def cross_entropy_with_logits(logits: jnp.ndarray, targets: jnp.ndarray,
                              z_loss: float = 0.0):
  """Cross entropy against soft targets plus `z_loss * log(Z)^2`.

  The z-loss keeps the softmax normaliser near 1, which stabilises bfloat16
  training of large T5 models.

  Args:
    logits: `[..., vocab]`.
    targets: `[..., vocab]` target distribution.
    z_loss: coefficient of the z-loss.

  Returns:
    `(loss, z_loss)`, each `[...]`; `loss` includes the z-loss.
  """
  log_z = jax.nn.logsumexp(logits, axis=-1, keepdims=True)
  loss = -jnp.sum(targets * (logits - log_z), axis=-1)
  total_z_loss = z_loss * jnp.square(jnp.squeeze(log_z, -1))
  return loss + total_z_loss, total_z_loss


def per_token_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray,
                            label_smoothing: float = 0.0, z_loss: float = 0.0):
  """Per-token loss `[batch, len]` against integer `targets` `[batch, len]`.

  With label smoothing the loss is shifted by the entropy of the smoothed
  target distribution, so a perfect prediction scores 0 as in t5x.

  Returns:
    `(loss, z_loss)`, each `[batch, len]`.
  """
  vocab_size = logits.shape[-1]
  confidence = 1.0 - label_smoothing
  low_confidence = (1.0 - confidence) / (vocab_size - 1)
  normalizing_constant = -(
      confidence * jnp.log(confidence)
      + (vocab_size - 1) * low_confidence * jnp.log(low_confidence + 1e-20))
  soft_targets = jax.nn.one_hot(targets, vocab_size) * (
      confidence - low_confidence) + low_confidence
  loss, total_z_loss = cross_entropy_with_logits(logits, soft_targets, z_loss)
  return loss - normalizing_constant, total_z_loss


def compute_weighted_cross_entropy(logits, targets, weights=None,
                                   label_smoothing: float = 0.0,
                                   z_loss: float = 0.0):
  """Weighted token losses summed over the batch.

  The sums are what batches, microbatches and steps add up; a caller divides
  once, by the token count or t5x's `loss_normalizing_factor`.

  Args:
    logits: `[batch, len, vocab]`.
    targets: `[batch, len]` integer targets.
    weights: `[batch, len]` loss weights (0 on padding), or None for all 1.
    label_smoothing: label smoothing mass.
    z_loss: z-loss coefficient.

  Returns:
    `(loss, z_loss, weight_sum)` scalars; `loss` includes the z-loss.
  """
  loss, total_z_loss = per_token_cross_entropy(logits, targets,
                                               label_smoothing, z_loss)
  if weights is None:
    weights = jnp.ones(targets.shape, loss.dtype)
  return (jnp.sum(loss * weights), jnp.sum(total_z_loss * weights),
          jnp.sum(weights))
