"""Gradients reach the hyper-prompt parameters and a few steps learn."""

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

from hyperprompt_jax import losses
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
  grads = jax.jit(jax.grad(lambda p: model.loss_fn(p, batch)[0]))(params)
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
  final, _ = _loss(model, params, batch)
  assert float(final) < 0.8 * losses[0]


def _loss(model, params, batch):
  """`model.loss_fn`, compiled for the model's current settings (a fresh
  function each call, so a changed setting is never served a stale trace)."""
  return jax.jit(lambda p, b: model.loss_fn(p, b))(params, batch)


def test_loss_metrics_and_scores():
  model = _model('none')
  batch = {k: jnp.asarray(v) for k, v in tm.unpacked_batch().items()}
  params = tm.init_params(model.module, batch)
  loss, metrics = _loss(model, params, batch)
  assert float(metrics['num_tokens']) == 9.0  # 10 targets, 1 padding
  assert float(metrics['num_examples']) == 2.0
  assert 0.0 <= float(metrics['accuracy']) <= 1.0
  np.testing.assert_allclose(loss, metrics['cross_ent_loss'] + metrics['z_loss'],
                             rtol=1e-6)
  # Scoring is the negated, unsmoothed, z-loss-free token loss.
  scores = jax.jit(model.score_batch)(params, batch)
  model.z_loss = 0.0
  plain, _ = _loss(model, params, batch)
  np.testing.assert_allclose(-jnp.sum(scores) / 9.0, plain, rtol=1e-5)


def test_label_smoothing_and_z_loss_match_a_hand_computation():
  rng = np.random.RandomState(0)
  logits = rng.normal(size=(2, 3, 7)).astype(np.float32)
  targets = np.array([[1, 4, 0], [6, 2, 3]])
  weights = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], np.float32)
  smoothing, z_coef = 0.1, 1e-2
  # Soft targets: 1 - smoothing on the target, the rest spread evenly.
  soft = np.full(logits.shape, smoothing / 6)
  np.put_along_axis(soft, targets[..., None], 1 - smoothing, -1)
  log_z = np.log(np.exp(logits).sum(-1))
  log_p = logits - log_z[..., None]
  entropy = -(soft * np.log(soft)).sum(-1)
  per_token = -(soft * log_p).sum(-1) - entropy + z_coef * log_z**2
  loss, z_loss, weight_sum = losses.compute_weighted_cross_entropy(
      jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights),
      label_smoothing=smoothing, z_loss=z_coef)
  np.testing.assert_allclose(loss, (per_token * weights).sum(), rtol=1e-5)
  np.testing.assert_allclose(z_loss, (z_coef * log_z**2 * weights).sum(),
                             rtol=1e-5)
  assert float(weight_sum) == 5.0
  # A perfect prediction of the smoothed targets scores 0.
  perfect, _, _ = losses.compute_weighted_cross_entropy(
      jnp.log(jnp.asarray(soft, jnp.float32)), jnp.asarray(targets),
      label_smoothing=smoothing)
  assert abs(float(perfect)) < 1e-5


def test_model_loss_applies_its_label_smoothing():
  model = _model('global')
  batch = {k: jnp.asarray(v) for k, v in tm.unpacked_batch().items()}
  params = tm.init_params(model.module, batch)
  logits = jax.jit(model.logits)(params, batch)
  model.label_smoothing, model.z_loss = 0.2, 0.0
  loss, _ = _loss(model, params, batch)
  weights = (batch['decoder_target_tokens'] > 0).astype(jnp.float32)
  total, _, tokens = losses.compute_weighted_cross_entropy(
      logits, batch['decoder_target_tokens'], weights, label_smoothing=0.2)
  np.testing.assert_allclose(loss, total / tokens, rtol=1e-6)
  model.label_smoothing = 0.0
  assert abs(float(_loss(model, params, batch)[0]) - float(loss)) > 1e-3
