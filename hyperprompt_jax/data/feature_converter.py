"""Encoder-decoder feature converter that carries each example's task id.

The scalar `task_id` of every task example is broadcast to one id per token
before packing, so packing concatenates ids exactly like the tokens they
belong to and every token of a packed row knows its own example's task.
Padding positions get id 0 (segment id 0 tells them apart from task 0).

With `one_task_per_row` (off here; on in `gin/variants/hyperprompt.gin`),
packing keeps the tasks apart: examples are grouped by task into windows as
long as seqio's packing chunks (the longest feature length), and each window
is packed on its own, so every packed row holds examples of one task and the
network routes it by row (`HyperPromptConfig.one_task_per_row`, bound to the
same gin macro). Each example still comes once, in the mixture's
proportions. A window's rows come out together, so the packed rows then pass
a shuffle buffer of `row_shuffle_buffer` rows (fixed seed, saved with the
iterator's state): a batch of 32 rows of the compared mixture
(`runs/synthetic_tiny_base.gin` on `synthetic_prefixed_mixture`) holds 2.1
tasks on average without it, 5.6 with 1024 rows, as with mixed packing.
Rows of one task pack less densely where a task's examples have similar
lengths (the synthetic mixture needs 7% more rows at lengths 32/16), the
price of sparing every row all tasks' prompts.

Example, task feature lengths {'inputs': 8, 'targets': 5}, pack=True,
one_task_per_row=True (the input ends before a window fills, so both
windows are packed then; the row shuffle may put either row first):

  [{'inputs': [7, 8, 1], 'targets': [3, 1], 'task_id': 2},
   {'inputs': [4, 9, 5, 1], 'targets': [6, 1], 'task_id': 0},
   {'inputs': [6, 1], 'targets': [5, 1], 'task_id': 2}] ->
  {'encoder_input_tokens': [4, 9, 5, 1, 0, 0, 0, 0],
   'encoder_task_ids':     [0, 0, 0, 0, 0, 0, 0, 0], ...},
  {'encoder_input_tokens': [7, 8, 1, 6, 1, 0, 0, 0],
   'encoder_task_ids':     [2, 2, 2, 2, 2, 0, 0, 0],
   'encoder_segment_ids':  [1, 1, 1, 2, 2, 0, 0, 0],
   'decoder_target_tokens': [3, 1, 5, 1, 0],
   'decoder_task_ids':      [2, 2, 2, 2, 0], ...}
"""

from collections.abc import Mapping

import gin
import seqio
import tensorflow as tf

TASK_ID = 'task_id'
_ROW_SHUFFLE_SEED = 0
_PER_TOKEN = {'inputs': 'inputs_task_ids', 'targets': 'targets_task_ids'}


@gin.configurable(module='hyperprompt_jax.data.feature_converter')
class HyperPromptEncDecFeatureConverter(seqio.EncDecFeatureConverter):
  """seqio's EncDecFeatureConverter plus per-token task ids.

  Task features: `inputs` [length], `targets` [length] and the scalar int32
  `task_id` (checked here, not listed in TASK_FEATURES, so that
  `task_feature_lengths` stays {'inputs', 'targets'} as in t5x configs).
  Model features: those of EncDecFeatureConverter plus `encoder_task_ids`
  [encoder_length] and `decoder_task_ids` [decoder_length], int32.
  """

  def __init__(self, *args, one_task_per_row: bool = False,
               row_shuffle_buffer: int = 1024, **kwargs):
    """seqio's arguments, whether packed rows hold one task each, and how
    many such rows are shuffled together (1: none)."""
    super().__init__(*args, **kwargs)
    self.one_task_per_row = one_task_per_row
    self.row_shuffle_buffer = row_shuffle_buffer

  MODEL_FEATURES = {
      **seqio.EncDecFeatureConverter.MODEL_FEATURES,
      'encoder_task_ids': seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
      'decoder_task_ids': seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
  }

  def _convert_features(self, ds: tf.data.Dataset,
                        task_feature_lengths: Mapping[str, int]
                        ) -> tf.data.Dataset:
    """Broadcasts `task_id` per token, then packs/pads and converts."""
    _check_task_id(ds.element_spec)

    def broadcast_task_id(features):
      # Stored as id + 1: seqio's packing finds each sequence's length by its
      # nonzero entries, which would drop the ids of task 0.
      features = dict(features)
      for name, per_token in _PER_TOKEN.items():
        features[per_token] = tf.fill(tf.shape(features[name])[:1],
                                      features[TASK_ID] + 1)
      return features

    ds = ds.map(broadcast_task_id,
                num_parallel_calls=tf.data.experimental.AUTOTUNE)
    lengths = {**task_feature_lengths,
               **{per_token: task_feature_lengths[name]
                  for name, per_token in _PER_TOKEN.items()}}
    ds = self._pack_or_pad(ds, lengths)
    return ds.map(self._convert_example,
                  num_parallel_calls=tf.data.experimental.AUTOTUNE)

  def _pack_or_pad(self, ds: tf.data.Dataset,
                   packed_lengths: Mapping[str, int]) -> tf.data.Dataset:
    """seqio's padding or packing; with `one_task_per_row`, its packing
    applied to each task's windows, then the rows shuffled."""
    pad_or_pack = super()._pack_or_pad
    if not (self.pack and self.one_task_per_row):
      return pad_or_pack(ds, packed_lengths)
    ds = ds.group_by_window(
        key_func=lambda features: tf.cast(features[TASK_ID], tf.int64),
        reduce_func=lambda task, window: pad_or_pack(window, packed_lengths),
        window_size=max(packed_lengths.values()))
    if self.row_shuffle_buffer <= 1:
      return ds
    # A fixed seed keeps the order a function of the input stream (which the
    # run's seed already varies), so resumed and repeated runs read the same.
    return ds.shuffle(self.row_shuffle_buffer, seed=_ROW_SHUFFLE_SEED)

  def _convert_example(self, features: Mapping[str, tf.Tensor]
                       ) -> Mapping[str, tf.Tensor]:
    """EncDecFeatureConverter's features plus the per-token task ids."""
    # Undo the shift of `broadcast_task_id`; padding (0) becomes 0 again.
    return {**super()._convert_example(features),
            'encoder_task_ids': tf.maximum(features['inputs_task_ids'] - 1, 0),
            'decoder_task_ids': tf.maximum(features['targets_task_ids'] - 1, 0)}

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                ) -> Mapping[str, int]:
    """EncDecFeatureConverter's lengths plus those of the task-id features."""
    return {**super().get_model_feature_lengths(task_feature_lengths),
            'encoder_task_ids': task_feature_lengths['inputs'],
            'decoder_task_ids': task_feature_lengths['targets']}


def _check_task_id(element_spec: Mapping[str, tf.TensorSpec]) -> None:
  """Raises ValueError unless examples carry a scalar int32 `task_id`."""
  spec = element_spec.get(TASK_ID)
  if spec is None:
    raise ValueError(
        "Examples have no 'task_id' feature; register tasks through "
        'hyperprompt_jax.tasks (add_task_id preprocessor) and read mixtures '
        'with their task ids passed through.')
  if spec.dtype != tf.int32 or spec.shape.rank != 0:
    raise ValueError(
        f"'task_id' must be a scalar int32, got {spec.dtype.name} of shape "
        f'{spec.shape}.')
