"""HyperPromptEncDecFeatureConverter: task ids per row where rows hold one
task, per token where packed rows mix tasks."""

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
  rows = {int(row['task_ids']): row for row in
          converter(_dataset(examples), LENGTHS).as_numpy_iterator()}
  assert sorted(rows) == [0, 1, 2]
  two = rows[2]
  assert 'encoder_task_ids' not in two and 'decoder_task_ids' not in two
  # Task 2's examples share a row although task 0's came between them.
  np.testing.assert_array_equal(two['encoder_input_tokens'],
                                [7, 8, 1, 6, 1, 0, 0, 0])
  np.testing.assert_array_equal(two['encoder_segment_ids'],
                                [1, 1, 1, 2, 2, 0, 0, 0])
  np.testing.assert_array_equal(two['decoder_target_tokens'], [3, 1, 5, 1, 0])
  np.testing.assert_array_equal(rows[1]['decoder_target_tokens'],
                                [9, 9, 1, 0, 0])


def test_task_zero_keeps_its_ids_when_packed():
  """Task 0's ids equal the padding value; packing must still keep them."""
  examples = [{'inputs': [4, 1], 'targets': [6, 6, 1], 'task_id': 0},
              {'inputs': [5, 1], 'targets': [7, 1], 'task_id': 0}]
  converter = HyperPromptEncDecFeatureConverter(pack=True,
                                                one_task_per_row=False)
  (row,) = converter(_dataset(examples), LENGTHS).as_numpy_iterator()
  np.testing.assert_array_equal(row['encoder_task_ids'], [0] * 8)
  np.testing.assert_array_equal(row['encoder_segment_ids'],
                                [1, 1, 2, 2, 0, 0, 0, 0])
  np.testing.assert_array_equal(row['decoder_segment_ids'], [1, 1, 1, 2, 2])


def test_unpacked_rows_carry_their_task():
  converter = HyperPromptEncDecFeatureConverter(pack=False)
  rows = list(converter(_dataset(EXAMPLES), LENGTHS).as_numpy_iterator())
  assert 'encoder_segment_ids' not in rows[0]
  assert 'encoder_task_ids' not in rows[0]
  assert [row['task_ids'] for row in rows] == [2, 0, 1]


# (pack, one_task_per_row) -> the batch shape of each task-id feature.
_ROW_IDS = {'task_ids': (3,)}
_TOKEN_IDS = {'encoder_task_ids': (3, 8), 'decoder_task_ids': (3, 5)}


@pytest.mark.parametrize('pack,one_task_per_row,shapes', [
    (False, False, _ROW_IDS), (False, True, _ROW_IDS),
    (True, True, _ROW_IDS), (True, False, _TOKEN_IDS)])
def test_rows_of_one_task_carry_batch_ids_and_mixed_rows_token_ids(
    pack, one_task_per_row, shapes):
  """`task_ids` `[batch]` where rows hold one task; `[batch, length]` token
  ids only where packed rows may mix tasks; `batch_shapes` says the same."""
  examples = [*EXAMPLES, {'inputs': [6, 1], 'targets': [5, 1], 'task_id': 2},
              {'inputs': [3, 1], 'targets': [4, 1], 'task_id': 1}]
  converter = HyperPromptEncDecFeatureConverter(
      pack=pack, one_task_per_row=one_task_per_row, row_shuffle_buffer=1)
  (batch,) = converter(_dataset(examples), LENGTHS).batch(
      3, drop_remainder=True).take(1).as_numpy_iterator()
  assert {k: v.shape for k, v in batch.items() if 'task' in k} == shapes
  assert all(batch[k].dtype == np.int32 for k in shapes)
  expected = {k: s for k, s in converter.batch_shapes(LENGTHS, 3).items()
              if 'task' in k}
  assert expected == shapes


@pytest.mark.parametrize('pack,one_task_per_row', [
    (False, False), (True, True), (True, False)])
def test_model_feature_lengths_cover_task_ids(pack, one_task_per_row):
  converter = HyperPromptEncDecFeatureConverter(
      pack=pack, one_task_per_row=one_task_per_row)
  lengths = converter.get_model_feature_lengths(LENGTHS)
  base = seqio.EncDecFeatureConverter(pack=pack).get_model_feature_lengths(
      LENGTHS)
  if pack and not one_task_per_row:
    assert lengths['encoder_task_ids'] == 8 and lengths['decoder_task_ids'] == 5
    assert set(lengths) == set(base) | {'encoder_task_ids', 'decoder_task_ids'}
  else:
    assert set(lengths) == set(base) | {'task_ids'}


def test_missing_or_wrong_task_id_is_an_error():
  converter = HyperPromptEncDecFeatureConverter(pack=True,
                                                one_task_per_row=False)
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
  converter = HyperPromptEncDecFeatureConverter(pack=True,
                                                one_task_per_row=False)
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
          for i in range(len(batch['encoder_input_tokens']))]


def _segments(row):
  """(task id, input ids, target ids) of every packed example of a row."""
  for segment in set(row['encoder_segment_ids'].tolist()) - {0}:
    enc = row['encoder_segment_ids'] == segment
    dec = row['decoder_segment_ids'] == segment
    task = row['task_ids'] if 'task_ids' in row else (
        row['encoder_task_ids'][enc][0])
    yield (int(task),
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
  assert all(row['task_ids'].shape == () for row in rows)
  packed = sorted(s for row in rows for s in _segments(row))
  unpacked = sorted(
      (int(row['task_ids']),
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
