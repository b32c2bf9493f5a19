"""Evaluation: padded eval batches, per-task metrics (teacher-forced and
seqio's), the printed table and eval_results.json, against hand computations.

`Evaluator` runs here on two small seqio tasks with a stand-in trainer whose
model predicts, scores and measures batches by rules simple enough to work
out by hand (ByteVocabulary: a character's id is its byte + 3, EOS is 1).
"""

import contextlib
import json

from clu import metrics as clu_metrics
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
import tensorflow as tf

from hyperprompt_jax.sharding import mesh as mesh_lib
from hyperprompt_jax.training import evaluation

VOCAB = seqio.ByteVocabulary()
# Task name -> (inputs, targets) of its validation examples. Inputs that
# start with 'y' are predicted right, the others as the empty string.
EXAMPLES = {
    'evaluation_test_letters': [('yes', 'ab'), ('no', 'abcd'), ('yay', 'b')],
    'evaluation_test_words': [('y', 'bb'), ('n', 'c')],
}
MIXTURE = 'evaluation_test_mixture'


def _exact_match(targets, predictions):
  # 'examples' is not a number: the evaluator leaves it out of the results.
  return {'exact': 100 * np.mean([t == p for t, p in zip(targets, predictions)]),
          'examples': [f'{t}->{p}' for t, p in zip(targets, predictions)]}


def _mean_score(targets, scores):
  del targets
  return {'mean_score': float(np.mean(scores))}


def _register():
  if MIXTURE in seqio.MixtureRegistry.names():
    return
  features = {k: seqio.Feature(VOCAB, add_eos=True)
              for k in ('inputs', 'targets')}
  for name, examples in EXAMPLES.items():
    def dataset_fn(split, shuffle_files, seed=None, examples=examples):
      del split, shuffle_files, seed
      inputs, targets = zip(*examples)
      return tf.data.Dataset.from_tensor_slices(
          {'inputs': list(inputs), 'targets': list(targets)})
    seqio.TaskRegistry.add(
        name,
        source=seqio.FunctionDataSource(dataset_fn, splits=['validation']),
        preprocessors=[seqio.preprocessors.tokenize,
                       seqio.preprocessors.append_eos],
        output_features=features,
        metric_fns=[_exact_match, _mean_score])
  seqio.MixtureRegistry.add(MIXTURE, list(EXAMPLES), default_rate=1.0)


class _Model:
  """Predicts the targets of rows whose input starts with 'y' (else
  nothing), scores a row by minus its target length, and measures a batch by
  its target ids: 'loss' their mean, 'accuracy' the share of even ids."""

  feature_converter_cls = seqio.EncDecFeatureConverter

  def predict_batch(self, params, batch):
    del params
    starts_with_y = batch['encoder_input_tokens'][:, :1] == ord('y') + 3
    return jnp.where(starts_with_y, batch['decoder_target_tokens'], 0)

  def score_batch(self, params, batch):
    del params
    return -jnp.sum(batch['decoder_target_tokens'] > 0, axis=-1).astype(
        jnp.float32)

  def eval_metrics(self, batch):
    targets = batch['decoder_target_tokens']
    weights = batch['decoder_loss_weights']
    count = jnp.sum(weights)
    return {'loss': clu_metrics.Average(total=jnp.sum(targets * weights),
                                        count=count),
            'accuracy': clu_metrics.Average(
                total=jnp.sum((targets % 2 == 0) * weights), count=count)}


class _Trainer:
  """What `Evaluator` uses of a `trainer.Trainer`, on one device."""

  def __init__(self):
    self.model = _Model()
    self.mesh = mesh_lib.MeshConfig().make_mesh()
    self.param_shardings = mesh_lib.replicated(self.mesh)
    self.batch_sharding = mesh_lib.batch_sharding(self.mesh)

  def activate(self):
    return contextlib.nullcontext()

  def eval_step(self, params, batch):
    del params
    return self.model.eval_metrics(batch)


def test_padded_batches_pad_the_last_batch_with_index_minus_one():
  ds = tf.data.Dataset.from_tensor_slices(
      (np.arange(5), {'tokens': np.arange(1, 11).reshape(5, 2),
                      'weights': np.ones((5, 2), np.float32)}))
  batches = list(evaluation.padded_batches(ds, 2))
  assert [indices.tolist() for indices, _ in batches] == [[0, 1], [2, 3],
                                                          [4, -1]]
  assert [f['tokens'].tolist() for _, f in batches] == [
      [[1, 2], [3, 4]], [[5, 6], [7, 8]], [[9, 10], [0, 0]]]
  assert batches[-1][1]['weights'].tolist() == [[1, 1], [0, 0]]


def test_each_task_gets_its_token_weighted_and_decoded_metrics():
  """Per task: 'loss' and 'token_accuracy' over all its real target tokens
  (the letters task's 3 examples come in a batch of 2 and a padded batch of
  1, of 8 and 2 tokens: the mean of the two batch means would differ), the
  tasks' own metrics from the predictions and scores, and no metric that is
  not a number."""
  _register()
  evaluator = evaluation.Evaluator(
      _Trainer(), MIXTURE, {'inputs': 8, 'targets': 8}, batch_size=2)
  results = evaluator.evaluate(jnp.zeros(()), step=3)

  # ByteVocabulary ids of 'a'..'d' (bytes 97..100, plus 3) and of EOS.
  a, b, c, d, eos = 100, 101, 102, 103, 1
  # Targets 'ab', 'abcd', 'b' and 'bb', 'c', each with EOS.
  letters = [a, b, eos, a, b, c, d, eos, b, eos]
  words = [b, b, eos, c, eos]
  want = {
      'evaluation_test_letters': {
          'loss': sum(letters) / 10,  # 71.1; the two batch means give 63.6
          'token_accuracy': 3 / 10,  # a, a, c are even
          'exact': 100 * 2 / 3,  # 'yes' and 'yay' predicted
          'mean_score': -(3 + 5 + 2) / 3,
      },
      'evaluation_test_words': {
          'loss': sum(words) / 5,
          'token_accuracy': 1 / 5,  # c
          'exact': 50.0,  # 'y' predicted
          'mean_score': -(3 + 2) / 2,
      },
  }
  assert sorted(results) == sorted(want)
  for task, metrics in want.items():
    assert results[task] == pytest.approx(metrics), task


def test_format_table_has_a_row_per_task_and_a_column_per_metric():
  results = {'words': {'loss': 1.5}, 'ab': {'exact': 50.0, 'loss': 0.25}}
  assert evaluation.format_table(results).splitlines() == [
      'task            exact            loss',
      'ab            50.0000          0.2500',
      'words               -          1.5000',
  ]


def test_write_results_writes_step_and_results_as_json(tmp_path):
  results = {'words': {'loss': 1.5}, 'ab': {'exact': 50.0, 'loss': 0.25}}
  path = evaluation.write_results(str(tmp_path), 12, results)
  assert path == str(tmp_path / 'eval_results.json')
  assert json.loads((tmp_path / 'eval_results.json').read_text()) == {
      'step': 12,
      'results': {'ab': {'exact': 50.0, 'loss': 0.25},
                  'words': {'loss': 1.5}},
  }
