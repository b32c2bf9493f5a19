"""Logged train metrics are token-weighted means over their whole window.

The train step returns sums and token counts; the log window adds them and
divides once. The expectations are computed in NumPy from the network's
logits with the loss written out: per real target token, `-log softmax` of
the target plus the z-loss `z * log(Z)^2`.
"""

import jax
import numpy as np
import pytest

from hyperprompt_jax.data import pipeline
from hyperprompt_jax.sharding import mesh as mesh_lib
from hyperprompt_jax.training import optimizers
from hyperprompt_jax.training import train_loop
from hyperprompt_jax.training import trainer as trainer_lib
import tiny_models as tm

BATCH, ENC_LEN, DEC_LEN = 4, 7, 6
LEARNING_RATE = 1e-2



def _batch(seed, real_per_row):
  """Rows whose first `real_per_row[i]` targets are real, the rest padding.

  Decoder inputs are drawn apart from the targets: the network reads the
  targets only for their padding, so targets can be changed at real
  positions without changing the logits.
  """
  targets = tm.random_tokens(seed, (BATCH, DEC_LEN))
  targets[np.arange(DEC_LEN) >= np.asarray(real_per_row)[:, None]] = 0
  tasks = np.arange(BATCH, dtype=np.int32)[:, None] % tm.NUM_TASKS
  return {
      'encoder_input_tokens': tm.random_tokens(seed + 1, (BATCH, ENC_LEN)),
      'decoder_input_tokens': tm.random_tokens(seed + 2, (BATCH, DEC_LEN)),
      'decoder_target_tokens': targets,
      'decoder_loss_weights': (targets > 0).astype(np.float32),
      'encoder_task_ids': np.repeat(tasks, ENC_LEN, 1),
      'decoder_task_ids': np.repeat(tasks, DEC_LEN, 1),
  }


def _trainer(model, num_microbatches=1):
  shapes = {k: v.shape for k, v in _batch(0, [DEC_LEN] * BATCH).items()}
  return trainer_lib.Trainer(
      model, optimizers.Adafactor(),
      optimizers.Schedule(base_learning_rate=LEARNING_RATE),
      mesh_lib.MeshConfig().make_mesh(), shapes,
      trainer_lib.TrainerConfig(num_microbatches=num_microbatches))


def _logits(model, params, batch):
  return np.asarray(model.logits(params, batch), np.float64)


def _sums(model, params, batch):
  """NumPy sums over the batch's real target tokens: (loss, z_loss, argmax
  hits, tokens)."""
  logits = _logits(model, params, batch)
  targets = batch['decoder_target_tokens']
  real = targets > 0
  log_z = np.log(np.exp(logits).sum(-1))
  target_logit = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
  z_loss = model.z_loss * log_z**2
  loss = log_z - target_logit + z_loss
  hits = logits.argmax(-1) == targets
  return np.array([(loss * real).sum(), (z_loss * real).sum(),
                   (hits * real).sum(), real.sum()])


def _means(sums):
  loss, z_loss, hits, tokens = sums
  return {'loss': loss / tokens, 'z_loss': z_loss / tokens,
          'cross_ent_loss': (loss - z_loss) / tokens, 'accuracy': hits / tokens}


def test_a_window_of_two_steps_weights_each_step_by_its_tokens():
  """A batch of 4 real tokens (one per row) whose targets are the initial
  network's argmax, then a full batch of 24 tokens, logged in one window:
  each metric is the two steps' sums over all 28 tokens (loss 3.84, accuracy
  1/7), not the mean of the two step means (2.89 and 0.5). The loop that
  averaged step means unweighted, before metrics were carried as sums,
  logged 2.89 here and fails this test.
  """
  model = tm.model('share')
  trainer = _trainer(model)
  state = trainer.init_state()
  before = jax.device_get(state.params)
  sparse = _batch(1, [1] * BATCH)
  best = _logits(model, before, sparse)[..., 1:].argmax(-1) + 1  # not padding
  sparse['decoder_target_tokens'] = np.where(
      sparse['decoder_target_tokens'] > 0, best, 0).astype(np.int32)
  full = _batch(2, [DEC_LEN] * BATCH)

  window = train_loop.MetricWindow()
  state, metrics = trainer.train_step(
      state, pipeline.to_global(sparse, trainer.batch_sharding))
  window.add(metrics)
  between = jax.device_get(state.params)
  _, metrics = trainer.train_step(
      state, pipeline.to_global(full, trainer.batch_sharding))
  window.add(metrics)
  logged = window.summary()

  first, second = _sums(model, before, sparse), _sums(model, between, full)
  assert (first[3], second[3]) == (4, 24)
  want = _means(first + second)
  unweighted = {k: (v + _means(second)[k]) / 2
                for k, v in _means(first).items()}
  assert abs(unweighted['loss'] - want['loss']) > 0.5
  assert abs(unweighted['accuracy'] - want['accuracy']) > 0.3
  for name, value in want.items():
    assert logged[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
  assert logged['learning_rate'] == pytest.approx(LEARNING_RATE)
  # 28 tokens in 2 steps: tokens per second times seconds per step.
  assert logged['tokens_per_second'] * logged['step_time_seconds'] == (
      pytest.approx(14))


def test_microbatches_of_different_token_counts_add_up_to_the_batch():
  """One step in two microbatches (rows 0, 2 and rows 1, 3) of 2 and 12
  tokens: its metrics are the whole batch's sums over its 14 tokens."""
  model = tm.model('share')
  trainer = _trainer(model, num_microbatches=2)
  state = trainer.init_state()
  params = jax.device_get(state.params)
  batch = _batch(3, [1, DEC_LEN, 1, DEC_LEN])
  window = train_loop.MetricWindow()
  _, metrics = trainer.train_step(
      state, pipeline.to_global(batch, trainer.batch_sharding))
  window.add(metrics)
  logged = window.summary()
  sums = _sums(model, params, batch)
  assert sums[3] == 14
  for name, value in _means(sums).items():
    assert logged[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
