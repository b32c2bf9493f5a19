"""The HyperPrompt network as a t5x model, for `python -m t5x.train`.

t5x's `EncoderDecoderModel` calls the network without task ids. This subclass
passes the task ids of `HyperPromptEncDecFeatureConverter` (`task_ids` per
row, or `encoder_task_ids` / `decoder_task_ids` per token) through initialisation, the loss, scoring
and decoding, and decodes with t5x's own decoding functions.

Importing this module imports t5x; nothing else in `hyperprompt_jax` does, so
the package works without it. Gin files under `gin/t5x/` use this module.
"""

import functools
from typing import Any, Mapping, MutableMapping, Optional

import jax
import jax.numpy as jnp

try:
  from t5x import adafactor  # pylint: disable=g-import-not-at-top
  from t5x import decoding  # pylint: disable=g-import-not-at-top
  from t5x import models  # pylint: disable=g-import-not-at-top
except ImportError as e:
  raise ImportError(
      f'hyperprompt_jax.t5x_integration.model needs t5x ({e}); t5x is not on PyPI, '
      'install it from https://github.com/google-research/t5x.') from None

from hyperprompt_jax.conditioning import routing  # pylint: disable=g-import-not-at-top,g-bad-import-order
from hyperprompt_jax.data import feature_converter  # pylint: disable=g-import-not-at-top,g-bad-import-order
from hyperprompt_jax.model import encoder_decoder as model_lib  # pylint: disable=g-import-not-at-top,g-bad-import-order
from hyperprompt_jax.sharding import partitioning  # pylint: disable=g-import-not-at-top,g-bad-import-order

Batch = Mapping[str, jnp.ndarray]


def _module_features(batch: Batch) -> dict[str, jnp.ndarray]:
  return {k: v for k, v in batch.items() if k in model_lib.MODULE_FEATURES}


def hyperprompt_axis_rules():
  """Partitioning rules of the hyper-prompt axes, for t5x's
  `standard_logical_axis_rules.additional_rules` (gin cannot name a constant).
  """
  return partitioning.HYPERPROMPT_AXIS_RULES


def adafactor_logical_factor_rules():
  """t5x's Adafactor factoring rules, plus the hyper-prompt axes.

  Adafactor needs a rule for every logical axis. The new axes get `NONE`, so
  the task-conditioning parameters (well under 1% of the model) keep full,
  unfactored second moments.
  """
  return {**adafactor.standard_logical_factor_rules(),
          **{axis: adafactor.FactorDim.NONE
             for axis, _ in partitioning.HYPERPROMPT_AXIS_RULES}}


class HyperPromptEncoderDecoderModel(models.EncoderDecoderModel):
  """t5x `EncoderDecoderModel` for `network.Transformer`, task ids included.

  Batches carry, next to t5x's usual encoder-decoder features, `task_ids`
  `[batch]` where rows hold one task (unpacked, or packed by task), or
  `encoder_task_ids` `[batch, enc_len]` and `decoder_task_ids`
  `[batch, dec_len]` where packed rows mix tasks.
  """

  FEATURE_CONVERTER_CLS = feature_converter.HyperPromptEncDecFeatureConverter

  def get_initial_variables(self, rng: jax.Array,
                            input_shapes: Mapping[str, Any],
                            input_types: Optional[Mapping[str, Any]] = None):
    """Initial `{'params', 'params_axes'}`; task ids default to zeros."""
    return model_lib.initial_variables(self.module, rng, input_shapes,
                                       input_types)

  def _compute_logits(self, params, batch: Batch, dropout_rng=None,
                      mutable=False, other_variables=None):
    """Teacher-forced logits `[batch, dec_len, vocab]` (used by loss, score)."""
    rngs = {'dropout': dropout_rng} if dropout_rng is not None else None
    return self.module.apply(
        {'params': params, **(other_variables or {})},
        **_module_features(batch), decode=False,
        enable_dropout=rngs is not None, rngs=rngs, mutable=mutable)

  def _compute_kv_cache(self, params, encoded_inputs, encoder_input_tokens,
                        decoder_input_tokens, prefill_decoder_prompt=False,
                        decoder_task_ids=None):
    """Initialises the decoder cache, including each row's decoder prompts.

    Unlike t5x's, this cache-initialising call passes `decoder_task_ids`,
    each row's task `[batch]`; prompt prefilling is not supported (t5x's
    decoding functions force-decode a prompt instead).
    """
    if prefill_decoder_prompt:
      raise ValueError('HyperPromptEncoderDecoderModel does not prefill '
                       'decoder prompts; use a decode_fn without it.')
    ones = jnp.ones_like(decoder_input_tokens)
    _, variables = self.module.apply(
        {'params': params}, encoded_inputs, encoder_input_tokens, ones, ones,
        decoder_task_ids=decoder_task_ids, enable_dropout=False, decode=True,
        mutable=['cache'], method=self.module.decode)
    return variables['cache'], None

  def predict_batch_with_aux(
      self,
      params,
      batch: Batch,
      rng: Optional[jax.Array] = None,
      decoder_params: Optional[MutableMapping[str, Any]] = None,
      return_all_decodes: Optional[bool] = None,
      num_decodes: Optional[int] = None,
      prompt_with_targets: bool = False,
  ):
    """Decodes with `self.decode_fn` (t5x beam search or sampling).

    The contract of t5x's `EncoderDecoderModel.predict_batch_with_aux`: returns
    decodes `[batch, len]` and `{'scores': [batch]}`, or with
    `return_all_decodes` `[batch, num_decodes, len]` and `[batch, num_decodes]`
    sorted by increasing log-probability. Encoding and the cache-initialising
    call receive the rows' task ids.
    """
    if return_all_decodes is None:
      return_all_decodes = self._default_decoder_params.return_all_decodes
    if num_decodes is None:
      num_decodes = self._default_decoder_params.num_decodes
    inputs = batch['encoder_input_tokens']
    decoder_input_tokens = batch['decoder_input_tokens']
    if prompt_with_targets:
      # Drop EOS so that decoding continues after the forced prompt.
      prompt = decoder_input_tokens * (
          decoder_input_tokens != self.output_vocabulary.eos_id)
    else:
      prompt = jnp.zeros_like(decoder_input_tokens)

    task_ids = routing.decoding_task_ids(batch)
    encoded = self.module.apply(
        {'params': params}, inputs, encoder_task_ids=task_ids,
        enable_dropout=False, method=self.module.encode)
    cache, _ = self._compute_kv_cache(params, encoded, inputs, prompt,
                                      decoder_task_ids=task_ids)

    # Beam search and sampling expand the batch in place to batch * decodes.
    tokens_ids_to_logits = functools.partial(
        self._compute_logits_from_slice, params=params,
        encoded_inputs=decoding.flat_batch_beam_expand(encoded, num_decodes),
        raw_inputs=decoding.flat_batch_beam_expand(inputs, num_decodes),
        max_decode_length=decoder_input_tokens.shape[1])
    decoder_params = dict(decoder_params or {})
    if rng is not None:
      if decoder_params.get('decode_rng') is not None:
        raise ValueError('Got an rng both as `rng` and as '
                         "`decoder_params['decode_rng']`; pass only one.")
      decoder_params['decode_rng'] = rng
    decoder_params.setdefault('eos_id', self.output_vocabulary.eos_id or 1)
    # Scanned layers keep their cache `[layers, batch, ...]`.
    decodes, scores = self._decode_fn(
        inputs=prompt, cache=cache, tokens_to_logits=tokens_ids_to_logits,
        num_decodes=num_decodes,
        cache_offset=1 if self.module.config.scan_layers else 0,
        **decoder_params)
    if return_all_decodes:
      return decodes, {'scores': scores}
    return decodes[:, -1, :], {'scores': scores[:, -1]}
