"""HyperPromptEncDecFeatureConverter: per-token task ids, packed and not."""

import numpy as np
import pytest
import seqio
import tensorflow as tf

import hyperprompt_jax.tasks as hp_tasks
from hyperprompt_jax.data.feature_converter import HyperPromptEncDecFeatureConverter
from hyperprompt_jax.tasks import synthetic

LENGTHS = {'inputs': 8, 'targets': 5}
LENGTHS_32 = {'inputs': 32, 'targets': 32}  # the synthetic mixture's rows


def _dataset(examples):
  return tf.data.Dataset.from_generator(
      lambda: iter(examples), output_signature={
          'inputs': tf.TensorSpec([None], tf.int32),
          'targets': tf.TensorSpec([None], tf.int32),
          'task_id': tf.TensorSpec([], tf.int32)})


EXAMPLES = [{'inputs': [7, 8, 1], 'targets': [3, 1], 'task_id': 2},
            {'inputs': [4, 9, 5, 1], 'targets': [6, 1], 'task_id': 0},
            {'inputs': [5, 1], 'targets': [9, 9, 1], 'task_id': 1}]


def test_packed_rows_hold_one_task_each():
  examples = [*EXAMPLES, {'inputs': [6, 1], 'targets': [5, 1], 'task_id': 2}]
  converter = HyperPromptEncDecFeatureConverter(pack=True,
                                               one_task_per_row=True)
  rows = {int(row['encoder_task_ids'][0]): row for row in
          converter(_dataset(examples), LENGTHS).as_numpy_iterator()}
  assert sorted(rows) == [0, 1, 2]
  two = rows[2]
  # Task 2's examples share a row although task 0's came between them.
  np.testing.assert_array_equal(two['encoder_input_tokens'],
                                [7, 8, 1, 6, 1, 0, 0, 0])
  np.testing.assert_array_equal(two['encoder_task_ids'],
                                [2, 2, 2, 2, 2, 0, 0, 0])
  np.testing.assert_array_equal(two['encoder_segment_ids'],
                                [1, 1, 1, 2, 2, 0, 0, 0])
  np.testing.assert_array_equal(two['decoder_target_tokens'], [3, 1, 5, 1, 0])
  np.testing.assert_array_equal(two['decoder_task_ids'], [2, 2, 2, 2, 0])
  np.testing.assert_array_equal(rows[1]['decoder_task_ids'], [1, 1, 1, 0, 0])


def test_task_zero_keeps_its_ids_when_packed():
  """Task 0's ids equal the padding value; packing must still keep them."""
  examples = [{'inputs': [4, 1], 'targets': [6, 6, 1], 'task_id': 0},
              {'inputs': [5, 1], 'targets': [7, 1], 'task_id': 0}]
  converter = HyperPromptEncDecFeatureConverter(pack=True)
  (row,) = converter(_dataset(examples), LENGTHS).as_numpy_iterator()
  np.testing.assert_array_equal(row['encoder_task_ids'], [0] * 8)
  np.testing.assert_array_equal(row['encoder_segment_ids'],
                                [1, 1, 2, 2, 0, 0, 0, 0])
  np.testing.assert_array_equal(row['decoder_segment_ids'], [1, 1, 1, 2, 2])


def test_unpacked_ids_fill_each_row():
  converter = HyperPromptEncDecFeatureConverter(pack=False)
  rows = list(converter(_dataset(EXAMPLES), LENGTHS).as_numpy_iterator())
  assert 'encoder_segment_ids' not in rows[0]
  np.testing.assert_array_equal(rows[0]['encoder_task_ids'],
                                [2, 2, 2, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(rows[2]['decoder_task_ids'], [1, 1, 1, 0, 0])
  np.testing.assert_array_equal(rows[1]['encoder_task_ids'],
                                [0, 0, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize('pack', [True, False])
def test_model_feature_lengths_cover_task_ids(pack):
  converter = HyperPromptEncDecFeatureConverter(pack=pack)
  lengths = converter.get_model_feature_lengths(LENGTHS)
  assert lengths['encoder_task_ids'] == 8 and lengths['decoder_task_ids'] == 5
  base = seqio.EncDecFeatureConverter(pack=pack).get_model_feature_lengths(
      LENGTHS)
  assert set(lengths) == set(base) | {'encoder_task_ids', 'decoder_task_ids'}


def test_missing_or_wrong_task_id_is_an_error():
  converter = HyperPromptEncDecFeatureConverter(pack=True)
  no_id = tf.data.Dataset.from_tensors({'inputs': [1], 'targets': [1]})
  with pytest.raises(ValueError, match="no 'task_id'"):
    converter(no_id, LENGTHS)
  vector_id = tf.data.Dataset.from_tensors(
      {'inputs': [1], 'targets': [1], 'task_id': [1]})
  with pytest.raises(ValueError, match='scalar int32'):
    converter(vector_id, LENGTHS)


def test_packed_mixture_batches_have_the_right_task_per_segment():
  """Each packed segment's id names the task whose rule maps its input."""
  mixture = seqio.get_mixture_or_task('synthetic_mixture')
  ds = mixture.get_dataset(LENGTHS_32, split='validation', shuffle=True,
                           seed=0, num_epochs=1)
  converter = HyperPromptEncDecFeatureConverter(pack=True)
  vocab = seqio.ByteVocabulary()
  names = list(hp_tasks.task_id_map('synthetic_mixture'))
  seen_ids = set()
  for row in converter(ds, LENGTHS_32).take(20).as_numpy_iterator():
    for segment in set(row['encoder_segment_ids'].tolist()) - {0}:
      enc = row['encoder_segment_ids'] == segment
      dec = row['decoder_segment_ids'] == segment
      task_id = set(row['encoder_task_ids'][enc].tolist())
      assert task_id == set(row['decoder_task_ids'][dec].tolist())
      (task_id,) = task_id
      seen_ids.add(task_id)
      inputs = vocab.decode(row['encoder_input_tokens'][enc].tolist())
      targets = vocab.decode(row['decoder_target_tokens'][dec].tolist())
      name = names[task_id].removeprefix('synthetic_')
      assert synthetic.SYNTHETIC_TASKS[name].target_fn(inputs) == targets
    assert np.all(row['encoder_task_ids'][row['encoder_segment_ids'] == 0] == 0)
  assert len(seen_ids) > 1


def _rows(batch):
  return [{name: rows[i] for name, rows in batch.items()}
          for i in range(len(batch['encoder_task_ids']))]


def _segments(row):
  """(task id, input ids, target ids) of every packed example of a row."""
  for segment in set(row['encoder_segment_ids'].tolist()) - {0}:
    enc = row['encoder_segment_ids'] == segment
    dec = row['decoder_segment_ids'] == segment
    yield (int(row['encoder_task_ids'][enc][0]),
           tuple(row['encoder_input_tokens'][enc].tolist()),
           tuple(row['decoder_target_tokens'][dec].tolist()))


def test_packing_by_task_keeps_every_example_and_packs_as_densely():
  """Per-task packing holds exactly the mixture's examples, one task per
  row, in about as many rows as seqio's packing of the mixed stream."""
  mixture = seqio.get_mixture_or_task('synthetic_mixture')
  ds = mixture.get_dataset(LENGTHS_32, split='validation', shuffle=False,
                           seed=0, num_epochs=1)
  rows = list(HyperPromptEncDecFeatureConverter(
      pack=True, one_task_per_row=True)(ds, LENGTHS_32).as_numpy_iterator())
  for row in rows:
    real = row['encoder_segment_ids'] > 0
    assert len(set(row['encoder_task_ids'][real].tolist())) == 1
  packed = sorted(s for row in rows for s in _segments(row))
  unpacked = sorted(
      (int(row['encoder_task_ids'][0]),
       tuple(row['encoder_input_tokens'][row['encoder_input_tokens'] > 0]),
       tuple(row['decoder_target_tokens'][row['decoder_target_tokens'] > 0]))
      for row in HyperPromptEncDecFeatureConverter(pack=False)(
          ds, LENGTHS_32).as_numpy_iterator())
  assert packed == unpacked and len(unpacked) > 100
  mixed_rows = sum(1 for _ in seqio.EncDecFeatureConverter(pack=True)(
      ds.map(lambda f: {'inputs': f['inputs'], 'targets': f['targets']}),
      LENGTHS_32))
  # One partly filled row per task and window at most beyond mixed packing.
  num_tasks = len(hp_tasks.task_id_map('synthetic_mixture'))
  windows = -(-len(unpacked) // 32)
  assert len(rows) <= mixed_rows + num_tasks + windows


def test_rows_of_one_task_are_shuffled_across_windows():
  """Each window's rows come out together; the row shuffle gives batches
  more tasks, with the same rows in a fixed order."""
  def batches(**converter_args):
    ds = seqio.get_mixture_or_task('synthetic_mixture').get_dataset(
        LENGTHS_32, split='train', shuffle=True, seed=0).take(2000)
    rows = HyperPromptEncDecFeatureConverter(pack=True, **converter_args)(
        ds, LENGTHS_32).batch(32).as_numpy_iterator()
    return [sorted(sorted(_segments(row)) for row in _rows(batch))
            for batch in rows]

  def tasks_per_batch(batches):
    return np.mean([len({task for row in batch for task, *_ in row})
                    for batch in batches])

  in_order = batches(one_task_per_row=True, row_shuffle_buffer=1)
  shuffled = batches(one_task_per_row=True)
  assert sorted(sum(shuffled, [])) == sorted(sum(in_order, []))
  assert shuffled != in_order and shuffled == batches(one_task_per_row=True)
  assert 1.3 * tasks_per_batch(in_order) < tasks_per_batch(shuffled)
