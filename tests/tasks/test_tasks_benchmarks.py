"""GLUE and SuperGLUE end to end under `tfds.testing.mock_data`.

Preprocess, tokenize (a tiny character SentencePiece model trained here),
convert features with task ids, decode, postprocess and score through
seqio's Evaluator. `super_glue/multirc` is left out: mock_data cannot serve
its nested features, so test_tasks_local_files.py covers it end to end.
"""

import contextlib
import functools
import string

import gin
import numpy as np
import pytest
import seqio
import sentencepiece as spm
import tensorflow_datasets as tfds

import hyperprompt_jax.tasks as hp_tasks
from hyperprompt_jax.data.feature_converter import HyperPromptEncDecFeatureConverter
from hyperprompt_jax.tasks import glue
from hyperprompt_jax.tasks import super_glue

LENGTHS = {'inputs': 256, 'targets': 32}
# Train split sizes as the TFDS catalog publishes them
# (tensorflow.org/datasets/catalog/glue, glue 2.0.0;
# tensorflow.org/datasets/catalog/super_glue, super_glue 1.0.2, WSC as
# wsc.fixed), written out here, not read from the tasks' own tables.
OFFICIAL_TRAIN_SIZES = {
    'glue_mixture': {
        'glue_cola_v2': 8551, 'glue_sst2_v2': 67349, 'glue_mrpc_v2': 3668,
        'glue_qqp_v2': 363846, 'glue_stsb_v2': 5749, 'glue_mnli_v2': 392702,
        'glue_qnli_v2': 104743, 'glue_rte_v2': 2490, 'glue_wnli_v2': 635},
    'super_glue_mixture': {
        'super_glue_boolq_v102': 9427, 'super_glue_cb_v102': 250,
        'super_glue_copa_v102': 400, 'super_glue_multirc_v102': 27243,
        'super_glue_record_v102': 100730, 'super_glue_rte_v102': 2490,
        'super_glue_wic_v102': 5428, 'super_glue_wsc_v102': 554},
}
MOCK_TASKS = (
    [(glue.task_name(n), n) for n in glue.GLUE_TASKS] +
    [(super_glue.task_name(n), n)
     for n in super_glue.SUPER_GLUE_TASKS if n != 'multirc'])


@pytest.fixture(scope='module', autouse=True)
def tiny_sentencepiece(tmp_path_factory):
  """Binds the benchmark vocabulary to a character model of printable ASCII."""
  folder = tmp_path_factory.mktemp('spm')
  (folder / 'corpus.txt').write_text(
      ''.join(c for c in string.printable if c.isprintable()) + '\n')
  spm.SentencePieceTrainer.train(
      input=str(folder / 'corpus.txt'), model_prefix=str(folder / 'chars'),
      model_type='char', vocab_size=200, hard_vocab_limit=False,
      character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      minloglevel=2)
  gin.bind_parameter(
      'hyperprompt_jax.tasks.get_vocabulary.sentencepiece_model_path',
      str(folder / 'chars.model'))
  with tfds.testing.mock_data(num_examples=6):
    yield
  gin.clear_config()


@contextlib.contextmanager
def _mixing_rate(**arguments):
  """Binds `tasks.mixing_rate`'s arguments for the block, then its defaults."""
  defaults = {'temperature': 1.0, 'maximum': None}
  for name, value in arguments.items():
    gin.bind_parameter(f'hyperprompt_jax.tasks.mixing_rate.{name}', value)
  try:
    yield
  finally:
    for name in arguments:
      gin.bind_parameter(f'hyperprompt_jax.tasks.mixing_rate.{name}',
                         defaults[name])


@functools.cache
def _evaluator(task_name):
  return seqio.Evaluator(
      task_name, HyperPromptEncDecFeatureConverter(pack=False),
      eval_split='validation', sequence_length=LENGTHS, logger_cls=())


def _evaluate(task_name, predict):
  """seqio evaluation of `task_name` with `predict(target tokens) -> tokens`."""
  evaluator = _evaluator(task_name)

  def predict_fn(ds, model_feature_shapes=None):
    del model_feature_shapes
    return [(i, predict(ex['decoder_target_tokens']))
            for i, ex in tfds.as_numpy(ds)]

  results, _ = evaluator.evaluate(compute_metrics=True, predict_fn=predict_fn)
  return results.result()[task_name]


@pytest.mark.parametrize('task_name,dataset', MOCK_TASKS)
def test_perfect_predictions_score_100_and_wrong_ones_0(task_name, dataset):
  del dataset
  perfect = _evaluate(task_name, lambda targets: targets)
  assert perfect and all(v == pytest.approx(100) for v in perfect.values())
  vocab = seqio.get_mixture_or_task(task_name).output_features[
      'targets'].vocabulary
  nonsense = vocab.encode('zz')
  wrong = _evaluate(task_name, lambda targets: nonsense)
  assert set(wrong) == set(perfect)
  assert all(v == pytest.approx(0) for v in wrong.values())


@pytest.mark.parametrize('task_name,dataset', MOCK_TASKS)
def test_text_to_text_format_and_task_ids(task_name, dataset):
  task = seqio.get_mixture_or_task(task_name)
  ds = task.get_dataset(LENGTHS, split='validation', shuffle=False)
  examples = list(ds.as_numpy_iterator())
  prefix = 'wsc text:' if dataset == 'wsc' else f'{dataset} '
  for ex in examples:
    assert ex['inputs_pretokenized'].decode().startswith(prefix)
    assert ex['inputs'][-1] == task.output_features['inputs'].vocabulary.eos_id
  features = HyperPromptEncDecFeatureConverter(pack=False)(ds, LENGTHS)
  task_id = hp_tasks.task_id_map(task_name)[task_name]
  for row in features.as_numpy_iterator():
    assert row['task_ids'] == task_id and 'encoder_task_ids' not in row


def test_classification_targets_are_label_names():
  task = seqio.get_mixture_or_task('glue_mnli_v2')
  ds = task.get_dataset(LENGTHS, split='validation_mismatched', shuffle=False)
  labels = {ex['targets_pretokenized'].decode()
            for ex in ds.as_numpy_iterator()}
  # TFDS glue/mnli's label names, as T5 writes MNLI targets.
  assert labels and labels <= {'entailment', 'neutral', 'contradiction'}


def test_glue_mixture_mixes_tasks_with_their_ids():
  # Equal rates, so that every task shows up before the first runs out.
  mixture = seqio.get_mixture_or_task('glue_mixture')
  with _mixing_rate(maximum=1):
    ds = mixture.get_dataset(LENGTHS, split='validation', shuffle=True, seed=0,
                             num_epochs=1)
    seen = {int(ex['task_id']) for ex in ds.as_numpy_iterator()}
  assert seen == set(hp_tasks.task_id_map('glue_mixture').values())


@pytest.mark.parametrize('mixture', sorted(OFFICIAL_TRAIN_SIZES))
def test_rates_are_official_train_sizes_offline(mixture):
  """Under mock data (no split table), examples-proportional rates are the
  official train sizes, and capped, temperature-scaled rates follow
  `mixing_rate`'s rule min(size, maximum) ** (1 / temperature). Catches a
  wrong size in a task's table, a task missing from its mixture, and a cap or
  temperature not applied."""
  sizes = OFFICIAL_TRAIN_SIZES[mixture]
  mixture = seqio.get_mixture_or_task(mixture)
  assert {t.name: mixture.get_rate(t) for t in mixture.tasks} == sizes
  with _mixing_rate(maximum=3000, temperature=2.0):
    scaled = {t.name: mixture.get_rate(t) for t in mixture.tasks}
  assert scaled == pytest.approx(
      {name: min(size, 3000) ** 0.5 for name, size in sizes.items()})


def test_benchmark_average_of_evaluator_results():
  scores = {name: _evaluate(name, lambda targets: targets)
            for name in ('glue_mrpc_v2', 'glue_stsb_v2')}
  scores['glue_rte_v2'] = _evaluate('glue_rte_v2', lambda targets: [5, 1])
  assert hp_tasks.benchmark_average(scores) == pytest.approx(200 / 3)
