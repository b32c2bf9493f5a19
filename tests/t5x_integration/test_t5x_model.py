"""The t5x model subclass: task ids reach loss, scoring and t5x decoding."""

import dataclasses
import sys

import jax
import numpy as np
import pytest
import seqio

from hyperprompt_jax.checkpointing import scan_conversion
from hyperprompt_jax.model import encoder_decoder as model_lib
from tests import tiny_models


def test_import_without_t5x_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, 't5x', None)  # As if t5x were absent.
  monkeypatch.delitem(sys.modules, 'hyperprompt_jax.t5x_integration.model',
                      raising=False)
  with pytest.raises(ImportError, match='needs t5x.*google-research/t5x'):
    import hyperprompt_jax.t5x_integration.model  # pylint: disable=g-import-not-at-top,unused-import


def _models(variant, **config):
  """The same network as a t5x model and as our standalone model; `config`
  overrides fields of its `T5Config`."""
  from t5x import adafactor  # pylint: disable=g-import-not-at-top
  from t5x import decoding  # pylint: disable=g-import-not-at-top
  from hyperprompt_jax.t5x_integration import model as t5x_model  # pylint: disable=g-import-not-at-top
  module = tiny_models.transformer(variant)
  module = module.clone(config=dataclasses.replace(module.config, **config))
  vocab = seqio.PassThroughVocabulary(tiny_models.VOCAB, eos_id=1)
  t5x = t5x_model.HyperPromptEncoderDecoderModel(
      module, vocab, vocab, adafactor.Adafactor(),
      decode_fn=decoding.temperature_sample)
  ours = model_lib.EncoderDecoderModel(module, vocab, vocab, z_loss=0.0)
  return t5x, ours


def _init(model, batch):
  shapes = {k: v.shape for k, v in batch.items()}
  return model.get_initial_variables(jax.random.PRNGKey(0), shapes)['params']


@pytest.mark.t5x
@pytest.mark.parametrize('variant', ['global', 'prompt_tuning'])
def test_loss_and_scores_follow_task_ids_and_match_standalone(variant):
  t5x, ours = _models(variant)
  batch = tiny_models.unpacked_batch(task_ids=(0, 1))
  batch['decoder_loss_weights'] = (batch['decoder_target_tokens'] > 0).astype(
      np.float32)
  params = _init(t5x, batch)
  scores = t5x.score_batch(params, batch)
  np.testing.assert_allclose(scores, ours.score_batch(params, batch),
                             rtol=1e-5, atol=1e-5)
  other = dict(batch,
               encoder_task_ids=(batch['encoder_task_ids'] + 1) % 3,
               decoder_task_ids=(batch['decoder_task_ids'] + 1) % 3)
  assert np.all(np.abs(t5x.score_batch(params, other) - scores) > 1e-6)
  loss, _ = t5x.loss_fn(params, batch, dropout_rng=None)
  assert loss != t5x.loss_fn(params, other, dropout_rng=None)[0]


@pytest.mark.t5x
@pytest.mark.parametrize('variant', ['none', 'global', 'prompt_tuning'])
def test_t5x_greedy_decoding_equals_standalone_greedy(variant):
  t5x, ours = _models(variant)
  batch = tiny_models.unpacked_batch(task_ids=(2, 1))
  params = _init(t5x, batch)
  decodes, aux = t5x.predict_batch_with_aux(
      params, batch, decoder_params={'topk': 1})
  greedy = ours.predict_batch(params, batch, decoder='greedy')
  np.testing.assert_array_equal(decodes, greedy)
  assert aux['scores'].shape == (2,)


@pytest.mark.t5x
def test_t5x_beam_search_returns_every_beam_per_task():
  from t5x import decoding  # pylint: disable=g-import-not-at-top
  t5x, _ = _models('global')
  t5x._decode_fn = decoding.beam_search  # pylint: disable=protected-access
  batch = tiny_models.unpacked_batch(task_ids=(0, 0))
  params = _init(t5x, batch)
  decodes, aux = t5x.predict_batch_with_aux(
      params, batch, num_decodes=3, return_all_decodes=True)
  assert decodes.shape == (2, 3, batch['decoder_input_tokens'].shape[1])
  assert np.all(np.diff(aux['scores'], axis=1) >= 0)  # Sorted increasing.
  other = dict(batch, encoder_task_ids=batch['encoder_task_ids'] + 2)
  other_scores = t5x.predict_batch_with_aux(
      params, other, num_decodes=3, return_all_decodes=True)[1]['scores']
  assert not np.allclose(other_scores, aux['scores'])


@pytest.mark.t5x
@pytest.mark.parametrize('variant', ['global', 'hyperformer'])
def test_t5x_beam_search_of_scanned_layers_equals_unscanned(variant):
  """t5x's beam search over the scanned cache (`[layers, batch, ...]`, prompts
  and adapter kernels included) decodes as the unscanned model does."""
  from t5x import decoding  # pylint: disable=g-import-not-at-top
  models = [_models(variant, scan_layers=scanned)[0]
            for scanned in (False, True)]
  batch = tiny_models.unpacked_batch(task_ids=(0, 2))
  params = _init(models[0], batch)
  results = []
  for model, p in zip(models, (params, scan_conversion.scan_params(params))):
    model._decode_fn = decoding.beam_search  # pylint: disable=protected-access
    results.append(model.predict_batch_with_aux(
        p, batch, num_decodes=3, return_all_decodes=True))
  (decodes, aux), (scanned_decodes, scanned_aux) = results
  np.testing.assert_array_equal(scanned_decodes, decodes)
  np.testing.assert_allclose(scanned_aux['scores'], aux['scores'], rtol=1e-5,
                             atol=1e-5)
