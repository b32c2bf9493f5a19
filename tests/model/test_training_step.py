"""Gradients reach the hyper-prompt parameters, a few steps learn, and the
loss, its metrics and scores match NumPy references."""

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperprompt_jax.model import losses
from hyperprompt_jax.sharding import mesh
from hyperprompt_jax.sharding import partitioning
import tiny_models as tm



@pytest.mark.parametrize('variant', tm.CONDITIONED_VARIANTS)
def test_gradients_reach_every_layer_and_only_the_batchs_tasks(variant):
  """Every slice of a conditioning parameter along its 'layers' (and adapter
  position) axis gets a gradient, and along 'tasks' exactly the batch's
  tasks (0 and 1 of 3) do. Catches a layer given another layer's prompts or
  adapters (its own slice unused), and rows routed to another task's."""
  model = tm.model(variant)
  batch = {k: jnp.asarray(v) for k, v in tm.unpacked_batch().items()}
  params = tm.init_params(model.module, batch)
  grads = jax.jit(jax.grad(lambda p: model.loss_fn(p, batch)[0]))(params)
  axes = traverse_util.flatten_dict(mesh.logical_axes(
      tm.variable_shapes(model.module)['params_axes']))
  conditioning = {p: np.asarray(g) for p, g in
                  traverse_util.flatten_dict(grads).items()
                  if partitioning.is_conditioning_param(p)}
  assert conditioning
  batch_tasks = set(np.asarray(batch['encoder_task_ids']).ravel().tolist())
  for path, g in conditioning.items():
    assert np.abs(g).max() > 0, path
    for axis, name in enumerate(axes[path]):
      if name not in ('layers', 'adapter_position', 'tasks'):
        continue
      reached = [bool(np.abs(np.take(g, i, axis)).max() > 0)
                 for i in range(g.shape[axis])]
      expected = [name != 'tasks' or i in batch_tasks
                  for i in range(g.shape[axis])]
      assert reached == expected, (path, name)


@pytest.mark.parametrize('variant', ['global', 'none'])
def test_a_few_adam_steps_reduce_the_loss(variant):
  model = tm.model(variant)
  batch = {k: jnp.asarray(v) for k, v in tm.unpacked_batch().items()}
  params = tm.init_params(model.module, batch)
  params, losses = tm.adam_steps(model, params, batch, 8)
  final, _ = _loss(model, params, batch)
  assert float(final) < 0.8 * losses[0]


def _loss(model, params, batch):
  """`model.loss_fn`, compiled for the model's current settings (a fresh
  function each call, so a changed setting is never served a stale trace)."""
  return jax.jit(lambda p, b: model.loss_fn(p, b))(params, batch)


def _soft_targets(targets, vocab, smoothing):
  """`[batch, len, vocab]`: `1 - smoothing` on each target, `smoothing`
  spread evenly over the other tokens."""
  targets = np.asarray(targets)
  soft = np.full((*targets.shape, vocab), smoothing / (vocab - 1))
  np.put_along_axis(soft, targets[..., None], 1 - smoothing, -1)
  return soft


def _reference_token_losses(logits, targets, smoothing=0.0, z_coef=0.0):
  """Per-token (loss, z-loss) `[batch, len]`, written from the formulas.

  The loss is the cross-entropy of the soft targets with softmax(logits)
  minus their entropy (so a perfect prediction scores 0), plus the z-loss
  `z_coef * log(Z)^2` of the softmax normaliser Z.
  """
  logits = np.asarray(logits, np.float64)
  soft = _soft_targets(targets, logits.shape[-1], smoothing)
  log_z = np.log(np.exp(logits).sum(-1))
  log_p = logits - log_z[..., None]
  entropy = -(soft * np.log(np.where(soft > 0, soft, 1))).sum(-1)
  z_loss = z_coef * log_z**2
  return -(soft * log_p).sum(-1) - entropy + z_loss, z_loss


def _targets_with_known_argmaxes(logits, targets, correct):
  """`targets` with the logits' argmax where `correct`, another token (never
  padding) elsewhere; padding (0) stays."""
  best = np.asarray(logits).argmax(-1)
  other = np.where(best == 2, 3, 2)
  return np.where(targets > 0, np.where(correct, best, other), 0).astype(
      np.int32)


@pytest.mark.parametrize('smoothing, z_coef, normalizer, weighted', [
    (0.0, 1e-4, None, False),  # the model's defaults
    (0.2, 1e-2, None, False),
    (0.1, 1e-2, 6.0, True),
])
def test_loss_and_metrics_match_a_numpy_reference(smoothing, z_coef,
                                                  normalizer, weighted):
  """The differentiated loss, and the sums and token counts of loss, z_loss,
  cross_ent_loss and accuracy, against NumPy written from the formulas, on
  targets whose argmax hits are chosen (4 of 9 real tokens).

  Catches a dropped or mis-scaled z-loss (`z_loss`, `loss`), label smoothing
  ignored or its entropy not subtracted, loss weights or the normaliser
  (token count or `loss_normalizing_factor`) misapplied, accuracy that does
  not count argmax hits over weighted real tokens, and metrics that are not
  per-token sums over the token weight (whatever the normaliser).
  """
  model = tm.model('none')
  model.label_smoothing, model.z_loss = smoothing, z_coef
  model.loss_normalizing_factor = normalizer
  batch = tm.unpacked_batch()
  params = tm.init_params(model.module, batch)
  # Targets with known hits; the network reads targets only for their
  # padding (masks), which stays, so the logits do not change.
  correct = np.array([[1, 0, 1, 0, 1], [0, 0, 1, 0, 0]], bool)
  batch['decoder_target_tokens'] = _targets_with_known_argmaxes(
      tm.apply(model.module, params, batch), batch['decoder_target_tokens'],
      correct)
  real = batch['decoder_target_tokens'] > 0
  weights = real.astype(np.float32)
  if weighted:
    weights = weights * np.array([[1, 2, 1, 1, 0.5], [1, 1, 3, 1, 1]])
    batch['decoder_loss_weights'] = weights.astype(np.float32)
  logits = tm.apply(model.module, params, batch)
  loss, metrics = _loss(model, params,
                        {k: jnp.asarray(v) for k, v in batch.items()})

  token_loss, token_z = _reference_token_losses(
      logits, batch['decoder_target_tokens'], smoothing, z_coef)
  loss_sum = (token_loss * weights).sum()
  z_sum = (token_z * weights).sum()
  np.testing.assert_allclose(loss, loss_sum / (normalizer or weights.sum()),
                             rtol=1e-5)
  assert real.sum() == 9 and (correct & real).sum() == 4
  want = {'loss': loss_sum, 'z_loss': z_sum, 'cross_ent_loss': loss_sum - z_sum,
          'accuracy': (weights * correct).sum()}
  assert sorted(metrics) == sorted(want)
  for name, total in want.items():
    np.testing.assert_allclose(metrics[name].total, total, rtol=1e-5,
                               err_msg=name)
    np.testing.assert_allclose(metrics[name].count, weights.sum(),
                               err_msg=name)


def test_scores_are_the_targets_log_likelihood():
  """`score_batch` is each row's summed log softmax of its real targets,
  computed in NumPy; catches scores that include the training loss's label
  smoothing or z-loss, count padding, or flip the sign."""
  model = tm.model('none')
  model.label_smoothing, model.z_loss = 0.1, 1e-2  # never part of a score
  batch = tm.unpacked_batch()
  params = tm.init_params(model.module, batch)
  logits = np.asarray(tm.apply(model.module, params, batch), np.float64)
  targets = batch['decoder_target_tokens']
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  token_log_p = np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
  scores = jax.jit(model.score_batch)(
      params, {k: jnp.asarray(v) for k, v in batch.items()})
  np.testing.assert_allclose(scores, (token_log_p * (targets > 0)).sum(-1),
                             rtol=1e-5)


def test_label_smoothing_and_z_loss_match_a_hand_computation():
  """`compute_weighted_cross_entropy` against the NumPy formulas on random
  logits (catches a wrong smoothing spread, z-loss or weighting)."""
  rng = np.random.RandomState(0)
  logits = rng.normal(size=(2, 3, 7)).astype(np.float32)
  targets = np.array([[1, 4, 0], [6, 2, 3]])
  weights = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], np.float32)
  smoothing, z_coef = 0.1, 1e-2
  per_token, token_z = _reference_token_losses(logits, targets, smoothing,
                                               z_coef)
  loss, z_loss, weight_sum = losses.compute_weighted_cross_entropy(
      jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights),
      label_smoothing=smoothing, z_loss=z_coef)
  np.testing.assert_allclose(loss, (per_token * weights).sum(), rtol=1e-5)
  np.testing.assert_allclose(z_loss, (token_z * weights).sum(), rtol=1e-5)
  assert float(weight_sum) == 5.0
  # A perfect prediction of the smoothed targets scores 0.
  soft = _soft_targets(targets, 7, smoothing)
  perfect, _, _ = losses.compute_weighted_cross_entropy(
      jnp.log(jnp.asarray(soft, jnp.float32)), jnp.asarray(targets),
      label_smoothing=smoothing)
  assert abs(float(perfect)) < 1e-5
