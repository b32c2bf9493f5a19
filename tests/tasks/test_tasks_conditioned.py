"""Bring your own seqio tasks: id-carrying copies and their mixture."""

import functools

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf

from hyperprompt_jax.data import feature_converter
from hyperprompt_jax.data import pipeline as data_lib
import hyperprompt_jax.tasks as hp_tasks
from hyperprompt_jax.tasks import metrics

_MIXTURE = 'test_byo_mixture'
_VOCABULARY = seqio.ByteVocabulary()
# Each task's inputs and targets repeat one letter, so every token tells
# which task it comes from.
_LETTERS = {'test_byo_a': ('a', 'x'), 'test_byo_b': ('b', 'y')}


def _register_plain_task(name, num_examples):
  """A seqio task as a user would write it: no task id anywhere."""
  source_letter, target_letter = _LETTERS[name]

  def dataset_fn(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    lengths = [1 + i % 5 for i in range(num_examples)]
    return tf.data.Dataset.from_tensor_slices({
        'inputs': [source_letter * n for n in lengths],
        'targets': [target_letter * (1 + n % 2) for n in lengths]})

  features = {k: seqio.Feature(_VOCABULARY) for k in ('inputs', 'targets')}
  seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(
          dataset_fn, splits=['train', 'validation'],
          num_input_examples={'train': num_examples,
                              'validation': num_examples}),
      preprocessors=[seqio.preprocessors.tokenize,
                     seqio.preprocessors.append_eos],
      output_features=features, metric_fns=[metrics.accuracy])


@pytest.fixture(scope='module')
def mixture():
  gin.clear_config()  # mixing_rate's defaults, whatever a run bound before.
  _register_plain_task('test_byo_a', 6)
  _register_plain_task('test_byo_b', 4)
  yield hp_tasks.add_conditioned_mixture(
      _MIXTURE, ['test_byo_a', ('test_byo_b', 2.0)])
  seqio.MixtureRegistry.remove(_MIXTURE)
  for name in _LETTERS:
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.remove(f'{_MIXTURE}.{name}')


def test_copies_carry_ids_in_the_given_order(mixture):
  expected = {f'{_MIXTURE}.test_byo_a': 0, f'{_MIXTURE}.test_byo_b': 1}
  assert hp_tasks.task_id_map(_MIXTURE) == expected
  assert hp_tasks.num_tasks(_MIXTURE) == 2
  assert hp_tasks.task_id_map(f'{_MIXTURE}.test_byo_b') == expected
  assert mixture.get_rate(seqio.get_mixture_or_task(
      f'{_MIXTURE}.test_byo_b')) == 2.0
  # Examples-proportional by default: the source's 6 train examples.
  assert mixture.get_rate(seqio.get_mixture_or_task(
      f'{_MIXTURE}.test_byo_a')) == 6.0


def test_copies_keep_the_original_task_and_leave_it_unchanged(mixture):
  del mixture
  original = seqio.get_mixture_or_task('test_byo_a')
  copy = seqio.get_mixture_or_task(f'{_MIXTURE}.test_byo_a')
  assert copy.source is original.source
  assert copy.output_features == original.output_features
  assert copy.metric_fns == original.metric_fns == [metrics.accuracy]
  assert copy.postprocessor is original.postprocessor
  assert list(copy.preprocessors[:-1]) == list(original.preprocessors)
  example = next(original.get_dataset(None, 'train', shuffle=False)
                 .as_numpy_iterator())
  assert 'task_id' not in example
  with pytest.raises(ValueError, match='add_task_id'):
    hp_tasks.task_id_map('test_byo_a')


@pytest.mark.parametrize('pack', [True, False])
def test_feature_converter_gives_each_token_its_tasks_id(mixture, pack):
  del mixture
  ds = seqio.get_dataset(
      _MIXTURE, {'inputs': 16, 'targets': 8}, dataset_split='train',
      shuffle=False, num_epochs=1, feature_converter=(
          feature_converter.HyperPromptEncDecFeatureConverter(pack=pack)))
  seen = set()
  for row in ds.take(20).as_numpy_iterator():
    # Packed rows may mix tasks: ids per token; unpacked rows: one per row.
    token_ids = lambda tokens, name: (
        row[name] if pack else np.full_like(tokens, row['task_ids']))
    for tokens, ids in (
        (row['encoder_input_tokens'],
         token_ids(row['encoder_input_tokens'], 'encoder_task_ids')),
        (row['decoder_target_tokens'],
         token_ids(row['decoder_target_tokens'], 'decoder_task_ids'))):
      letters = tokens[tokens > 1]  # Not padding or EOS.
      expected = np.isin(letters, _VOCABULARY.encode('by')).astype(np.int32)
      np.testing.assert_array_equal(ids[tokens > 1], expected)
      seen.update(expected.tolist())
  assert seen == {0, 1}


def test_trainer_data_path_reads_the_mixture(mixture):
  del mixture
  cfg = data_lib.DatasetConfig(_MIXTURE, {'inputs': 16, 'targets': 8},
                               batch_size=4)
  ds = data_lib.get_dataset(cfg, functools.partial(
      feature_converter.HyperPromptEncDecFeatureConverter,
      one_task_per_row=True))
  for batch in ds.take(3).as_numpy_iterator():
    data_lib.check_task_ids(batch, hp_tasks.num_tasks(_MIXTURE),
                            one_task_per_row=True)
    assert batch['task_ids'].shape == (4,)
    assert batch['encoder_input_tokens'].shape == (4, 16)


def test_batches_without_tf_data_autotuning_are_the_same(mixture):
  """`DatasetConfig.autotune=False` changes how tf.data runs, not what it
  yields: the same batches in the same order."""
  del mixture
  converter = functools.partial(
      feature_converter.HyperPromptEncDecFeatureConverter,
      one_task_per_row=True)

  def batches(autotune):
    cfg = data_lib.DatasetConfig(_MIXTURE, {'inputs': 16, 'targets': 8},
                                 batch_size=4, autotune=autotune)
    ds = data_lib.get_dataset(cfg, converter)
    # Unset (tf.data's default, on) unless turned off.
    assert ds.options().autotune.enabled is (None if autotune else False)
    return list(ds.take(5).as_numpy_iterator())

  tuned, fixed = batches(True), batches(False)
  assert len(tuned) == len(fixed) == 5
  for a, b in zip(tuned, fixed):
    assert a.keys() == b.keys()
    for name in a:
      np.testing.assert_array_equal(a[name], b[name], err_msg=name)
