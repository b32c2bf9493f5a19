"""Encoder-decoder model wrapper: initialisation, loss, scoring and decoding.

It mirrors the interface of t5x's `EncoderDecoderModel` with plain JAX, so the
standalone trainer needs no t5x; `t5x_integration/model.py` adapts the same network to
t5x itself.
"""

import functools
from typing import Any, Mapping

from clu import metrics as clu_metrics
from flax import linen as nn
import jax
import jax.numpy as jnp
import seqio

from hyperprompt_jax.conditioning import routing
from hyperprompt_jax.data import feature_converter
from hyperprompt_jax.model import decoding
from hyperprompt_jax.model import losses
from hyperprompt_jax.model import network

Batch = Mapping[str, jnp.ndarray]
# Batch features the network reads, in its keyword names.
MODULE_FEATURES = (
    'encoder_input_tokens', 'decoder_input_tokens', 'decoder_target_tokens',
    'encoder_segment_ids', 'decoder_segment_ids', 'encoder_positions',
    'decoder_positions', 'task_ids', 'encoder_task_ids', 'decoder_task_ids')


def initial_variables(module: nn.Module, rng: jnp.ndarray,
                      input_shapes: Mapping[str, tuple[int, ...]],
                      input_types: Mapping[str, Any] | None = None):
  """Initialises `module` (`{'params', 'params_axes'}`) from batch shapes.

  Features the network reads are made of ones; without task ids in
  `input_shapes` (neither `task_ids` `[batch]` nor token ids), token ids of
  zeros shaped like the tokens stand in.
  """
  input_types = input_types or {}
  dummy = {name: jnp.ones(shape, input_types.get(name, jnp.int32))
           for name, shape in input_shapes.items() if name in MODULE_FEATURES}
  if 'task_ids' not in dummy:
    for name in ('encoder_task_ids', 'decoder_task_ids'):
      prefix = name.split('_')[0]
      dummy.setdefault(name, jnp.zeros(input_shapes[f'{prefix}_input_tokens'],
                                       jnp.int32))
  params_rng, dropout_rng = jax.random.split(rng)
  return module.init({'params': params_rng, 'dropout': dropout_rng}, **dummy,
                     enable_dropout=False)


class EncoderDecoderModel:
  """A `network.Transformer` with its vocabularies and loss settings.

  Attributes:
    module: the Flax network.
    input_vocabulary: vocabulary of the inputs.
    output_vocabulary: vocabulary of the targets (its `eos_id` ends decoding).
    feature_converter_cls: turns task features into the model's features.
    label_smoothing: label smoothing mass of the training loss.
    z_loss: z-loss coefficient of the training loss.
    loss_normalizing_factor: divide summed token losses by this constant; None
      averages over the batch's real target tokens.
  """

  def __init__(self, module: nn.Module, input_vocabulary: seqio.Vocabulary,
               output_vocabulary: seqio.Vocabulary,
               feature_converter_cls=(
                   feature_converter.HyperPromptEncDecFeatureConverter),
               label_smoothing: float = 0.0, z_loss: float = 1e-4,
               loss_normalizing_factor: float | None = None):
    self.module = module
    self.input_vocabulary = input_vocabulary
    self.output_vocabulary = output_vocabulary
    self.feature_converter_cls = feature_converter_cls
    self.label_smoothing = label_smoothing
    self.z_loss = z_loss
    self.loss_normalizing_factor = loss_normalizing_factor

  def get_initial_variables(self, rng: jnp.ndarray,
                            input_shapes: Mapping[str, tuple[int, ...]],
                            input_types: Mapping[str, Any] | None = None):
    """Flax variables `{'params', 'params_axes'}` for batches of these shapes."""
    return initial_variables(self.module, rng, input_shapes, input_types)

  def compute_dtype_params(self, params):
    """`params` with the leaves the network uses only in its compute dtype
    cast to it (`network.compute_dtype_params`)."""
    return network.compute_dtype_params(self.module.config, params)

  def logits(self, params, batch: Batch, dropout_rng=None) -> jnp.ndarray:
    """Teacher-forced logits `[batch, dec_len, vocab]`."""
    rngs = {'dropout': dropout_rng} if dropout_rng is not None else None
    features = {k: v for k, v in batch.items() if k in MODULE_FEATURES}
    return self.module.apply({'params': params}, **features, rngs=rngs,
                             enable_dropout=dropout_rng is not None)

  def loss_fn(self, params, batch: Batch, dropout_rng=None):
    """Training loss and metric sums of one batch.

    Returns:
      `(loss, metrics)`: the scalar loss to differentiate (the weighted token
      losses summed, over the token weight or `loss_normalizing_factor`), and
      per-token means as `clu.metrics.Average`s of the batch's sums over its
      token weight `num_tokens` (the sum of `decoder_loss_weights`): `loss`,
      `z_loss`, `cross_ent_loss` and `accuracy` (argmax hits). Batches merge
      by adding sums and counts, so merged means are token-weighted.
    """
    logits = self.logits(params, batch, dropout_rng)
    targets = batch['decoder_target_tokens']
    weights = batch.get('decoder_loss_weights', (targets > 0).astype(
        jnp.float32))
    loss, z_loss, num_tokens = losses.compute_weighted_cross_entropy(
        logits, targets, weights, self.label_smoothing, self.z_loss)
    correct = jnp.sum((jnp.argmax(logits, -1) == targets) * weights)
    per_token = lambda total: clu_metrics.Average(total=total, count=num_tokens)
    metrics = {
        'loss': per_token(loss),
        'z_loss': per_token(z_loss),
        'cross_ent_loss': per_token(loss - z_loss),
        'accuracy': per_token(correct),
    }
    if self.loss_normalizing_factor is None:
      return loss / jnp.maximum(num_tokens, 1.0), metrics
    return loss / self.loss_normalizing_factor, metrics

  def score_batch(self, params, batch: Batch) -> jnp.ndarray:
    """Log-likelihood `[batch]` of each (unpacked) row's targets."""
    logits = self.logits(params, batch)
    targets = batch['decoder_target_tokens']
    token_loss, _ = losses.per_token_cross_entropy(logits, targets)
    weights = batch.get('decoder_loss_weights', targets > 0)
    return -jnp.sum(token_loss * weights, axis=-1)

  def _init_decoding(self, params, batch: Batch, max_decode_length: int):
    """Encodes the inputs and initialises the decoder cache (and prompts)."""
    inputs = batch['encoder_input_tokens']
    # The cache holds each row's own prompts.
    task_ids = routing.decoding_task_ids(batch)
    encoded = self.module.apply({'params': params}, inputs,
                                encoder_task_ids=task_ids,
                                enable_dropout=False,
                                method=self.module.encode)
    dummy = jnp.ones((inputs.shape[0], max_decode_length), jnp.int32)
    _, variables = self.module.apply(
        {'params': params}, encoded, inputs, dummy, dummy,
        decoder_task_ids=task_ids, enable_dropout=False, decode=True,
        mutable=['cache'], method=self.module.decode)
    return encoded, variables['cache']

  def _tokens_to_logits(self, params, encoded, inputs, max_decode_length,
                        ids, cache):
    logits, variables = self.module.apply(
        {'params': params, 'cache': cache}, encoded, inputs, ids, ids,
        enable_dropout=False, decode=True,
        max_decode_length=max_decode_length, mutable=['cache'],
        method=self.module.decode)
    return logits[:, -1, :], variables['cache']

  def predict_batch(self, params, batch: Batch, rng=None,
                    decoder: str = 'greedy', max_decode_length: int | None = None,
                    num_decodes: int = 4, temperature: float = 1.0,
                    topk: int = 0, alpha: float = 0.6,
                    return_scores: bool = False):
    """Decodes every row of an unpacked batch.

    Args:
      params: model parameters.
      batch: features with `encoder_input_tokens` (and `task_ids` `[batch]`).
      rng: PRNG key for `decoder='sample'`.
      decoder: 'greedy', 'sample' (temperature, top-k) or 'beam'.
      max_decode_length: tokens to produce at most; defaults to the batch's
        `decoder_input_tokens` length.
      num_decodes: beams for 'beam'.
      temperature: sampling temperature for 'sample'.
      topk: top-k cutoff for 'sample' (0 = off).
      alpha: brevity penalty exponent for 'beam'.
      return_scores: also return per-row scores (log-probabilities; length
        normalised for 'beam').

    Returns:
      int32 tokens `[batch, max_decode_length]` (0 after EOS), and scores
      `[batch]` if `return_scores`.
    """
    if max_decode_length is None:
      max_decode_length = batch['decoder_input_tokens'].shape[1]
    inputs = batch['encoder_input_tokens']
    batch_size = inputs.shape[0]
    encoded, cache = self._init_decoding(params, batch, max_decode_length)
    eos_id = self.output_vocabulary.eos_id
    if decoder == 'beam':
      encoded = decoding.expand_for_beams(encoded, num_decodes)
      inputs = decoding.expand_for_beams(inputs, num_decodes)
      cache = decoding.expand_cache_for_beams(cache, num_decodes)
    step = functools.partial(self._tokens_to_logits, params, encoded, inputs,
                             max_decode_length)
    if decoder == 'beam':
      tokens, scores = decoding.beam_search(
          step, cache, batch_size, max_decode_length, eos_id, num_decodes,
          alpha)
      tokens, scores = tokens[:, 0], scores[:, 0]
    elif decoder in ('greedy', 'sample'):
      tokens, scores = decoding.temperature_sample(
          step, cache, batch_size, max_decode_length, eos_id, rng,
          temperature=temperature if decoder == 'sample' else 0.0, topk=topk)
    else:
      raise ValueError(f'Unknown decoder {decoder!r}; use greedy, sample or '
                       'beam.')
    return (tokens, scores) if return_scores else tokens
