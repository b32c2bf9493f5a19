"""Gradients reach the hyper-prompt parameters and a few steps learn."""

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

from hyperprompt_jax import model as model_lib
from hyperprompt_jax import partitioning
import tiny_models as tm


def _model(variant):
  vocab = seqio.PassThroughVocabulary(tm.VOCAB, eos_id=1)
  return model_lib.EncoderDecoderModel(tm.transformer(variant), vocab, vocab,
                                       feature_converter_cls=object)


@pytest.mark.parametrize('variant', tm.CONDITIONED_VARIANTS)
def test_gradients_reach_every_conditioning_parameter(variant):
  model = _model(variant)
  batch = {k: jnp.asarray(v) for k, v in tm.unpacked_batch().items()}
  params = tm.init_params(model.module, batch)
  grads = jax.grad(lambda p: model.loss_fn(p, batch)[0])(params)
  flat = traverse_util.flatten_dict(grads)
  conditioning = {p: g for p, g in flat.items()
                  if partitioning.is_conditioning_param(p)}
  assert conditioning
  for path, g in conditioning.items():
    assert np.abs(np.asarray(g)).max() > 0, path


@pytest.mark.parametrize('variant', ['global', 'none'])
def test_a_few_adam_steps_reduce_the_loss(variant):
  model = _model(variant)
  batch = {k: jnp.asarray(v) for k, v in tm.unpacked_batch().items()}
  params = tm.init_params(model.module, batch)
  params, losses = tm.adam_steps(model, params, batch, 8)
  final, _ = model.loss_fn(params, batch)
  assert float(final) < 0.8 * losses[0]


def test_loss_metrics_and_label_smoothing():
  model = _model('none')
  batch = {k: jnp.asarray(v) for k, v in tm.unpacked_batch().items()}
  params = tm.init_params(model.module, batch)
  loss, metrics = model.loss_fn(params, batch)
  assert float(metrics['num_tokens']) == 9.0  # 10 targets, 1 padding
  assert float(metrics['num_examples']) == 2.0
  assert 0.0 <= float(metrics['accuracy']) <= 1.0
  np.testing.assert_allclose(loss, metrics['cross_ent_loss'] + metrics['z_loss'],
                             rtol=1e-6)
  # Scoring is the negated, unsmoothed, z-loss-free token loss.
  scores = model.score_batch(params, batch)
  model.z_loss = 0.0
  plain, _ = model.loss_fn(params, batch)
  np.testing.assert_allclose(-jnp.sum(scores) / 9.0, plain, rtol=1e-5)
