"""Encoder-decoder feature converter that carries each example's task id.

Where rows hold one task (pack=False, or pack=True with `one_task_per_row`),
each row's task id passes through as it comes, one id per row: the model
feature `task_ids`, rank 0 per row and `[batch]` once batched. Packed rows
that may mix tasks (pack=True without `one_task_per_row`) instead carry one
id per token, `encoder_task_ids` [encoder_length] and `decoder_task_ids`
[decoder_length]: the scalar `task_id` is broadcast to every token before
packing, so packing concatenates ids exactly like the tokens they belong to.
Padding positions get id 0 (segment id 0 tells them apart from task 0).

With `one_task_per_row` (off here; on in `gin/variants/hyperprompt.gin`),
packing keeps the tasks apart: examples are grouped by task into windows as
long as seqio's packing chunks (the longest feature length), and each window
is packed on its own by seqio's `EncDecFeatureConverter`, so every packed row
holds examples of one task, the window's, and the network routes it by row
(`HyperPromptConfig.one_task_per_row`, bound to the same gin macro). Each
example still comes once, in the mixture's proportions. A window's rows come
out together, so the packed rows then pass a shuffle buffer of
`row_shuffle_buffer` rows (fixed seed, saved with the iterator's state): a
batch of 32 rows of the compared mixture (`runs/synthetic_tiny_base.gin` on
`synthetic_prefixed_mixture`) holds 2.1 tasks on average without it, 5.6
with 1024 rows, as with mixed packing. Rows of one task pack less densely
where a task's examples have similar lengths (the synthetic mixture needs 7%
more rows at lengths 32/16), the price of sparing every row all tasks'
prompts.

Example, task feature lengths {'inputs': 8, 'targets': 5}, pack=True,
one_task_per_row=True (the input ends before a window fills, so both
windows are packed then; the row shuffle may put either row first):

  [{'inputs': [7, 8, 1], 'targets': [3, 1], 'task_id': 2},
   {'inputs': [4, 9, 5, 1], 'targets': [6, 1], 'task_id': 0},
   {'inputs': [6, 1], 'targets': [5, 1], 'task_id': 2}] ->
  {'encoder_input_tokens': [4, 9, 5, 1, 0, 0, 0, 0], 'task_ids': 0, ...},
  {'encoder_input_tokens': [7, 8, 1, 6, 1, 0, 0, 0],
   'encoder_segment_ids':  [1, 1, 1, 2, 2, 0, 0, 0],
   'decoder_target_tokens': [3, 1, 5, 1, 0],
   'task_ids': 2, ...}
"""

from collections.abc import Mapping

import gin
import seqio
import tensorflow as tf

TASK_ID = 'task_id'
# The model feature of rows of one task: each row's task, rank 0 per row.
ROW_TASK_IDS = 'task_ids'
# The model features of packed rows that may mix tasks: each token's task.
TOKEN_TASK_IDS = ('encoder_task_ids', 'decoder_task_ids')
_ROW_SHUFFLE_SEED = 0
_PER_TOKEN = {'inputs': 'inputs_task_ids', 'targets': 'targets_task_ids'}
_ROW_FEATURES = {
    ROW_TASK_IDS: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32, rank=0)}
_TOKEN_FEATURES = {name: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
                   for name in TOKEN_TASK_IDS}


@gin.configurable(module='hyperprompt_jax.data.feature_converter')
class HyperPromptEncDecFeatureConverter(seqio.EncDecFeatureConverter):
  """seqio's EncDecFeatureConverter plus task ids, per row or per token.

  Task features: `inputs` [length], `targets` [length] and the scalar int32
  `task_id` (checked here, not listed in TASK_FEATURES, so that
  `task_feature_lengths` stays {'inputs', 'targets'} as in t5x configs).
  Model features: those of EncDecFeatureConverter plus, where rows hold one
  task, `task_ids` (rank 0: `[batch]` once batched), and where packed rows
  may mix tasks, `encoder_task_ids` [encoder_length] and `decoder_task_ids`
  [decoder_length]; all int32.
  """

  def __init__(self, *args, one_task_per_row: bool = False,
               row_shuffle_buffer: int = 1024, **kwargs):
    """seqio's arguments, whether packed rows hold one task each, and how
    many such rows are shuffled together (1: none)."""
    self.one_task_per_row = one_task_per_row  # before seqio reads it
    super().__init__(*args, **kwargs)
    self.row_shuffle_buffer = row_shuffle_buffer
    # Packs each task's window: seqio packs rank-1 features only, so the
    # rows' `task_ids` join after it.
    self._tokens = seqio.EncDecFeatureConverter(*args, **kwargs)

  @property
  def rows_hold_one_task(self) -> bool:
    """Whether every row holds examples of one task (carries `task_ids`)."""
    return not self.pack or self.one_task_per_row

  @property
  def MODEL_FEATURES(self):  # pylint: disable=invalid-name
    """EncDecFeatureConverter's model features plus the task-id features."""
    return {**seqio.EncDecFeatureConverter.MODEL_FEATURES,
            **(_ROW_FEATURES if self.rows_hold_one_task else _TOKEN_FEATURES)}

  def __call__(self, ds: tf.data.Dataset,
               task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    """seqio's conversion; packed rows of one task are packed per task by
    seqio's EncDecFeatureConverter (with all its checks), then get their
    window's task as `task_ids` and are shuffled."""
    if not (self.pack and self.one_task_per_row):
      return super().__call__(ds, task_feature_lengths)
    _check_task_id(ds.element_spec)

    def pack_window(task, window):
      rows = self._tokens(window, task_feature_lengths)
      return rows.map(
          lambda row: {**row, ROW_TASK_IDS: tf.cast(task, tf.int32)})

    ds = ds.group_by_window(
        key_func=lambda features: tf.cast(features[TASK_ID], tf.int64),
        reduce_func=pack_window,
        window_size=max(task_feature_lengths.values()))
    if self.row_shuffle_buffer <= 1:
      return ds
    # A fixed seed keeps the order a function of the input stream (which the
    # run's seed already varies), so resumed and repeated runs read the same.
    return ds.shuffle(self.row_shuffle_buffer, seed=_ROW_SHUFFLE_SEED)

  def _convert_features(self, ds: tf.data.Dataset,
                        task_feature_lengths: Mapping[str, int]
                        ) -> tf.data.Dataset:
    """Pads unpacked rows, keeping `task_id`; broadcasts it per token, then
    packs, where packed rows may mix tasks."""
    _check_task_id(ds.element_spec)
    if not self.pack:
      # seqio's padding keeps features it is given no length for.
      ds = self._pack_or_pad(ds, task_feature_lengths)
      return ds.map(self._convert_example,
                    num_parallel_calls=tf.data.experimental.AUTOTUNE)

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

  def _convert_example(self, features: Mapping[str, tf.Tensor]
                       ) -> Mapping[str, tf.Tensor]:
    """EncDecFeatureConverter's features plus the row's or tokens' task ids."""
    converted = super()._convert_example(features)
    if not self.pack:
      return {**converted, ROW_TASK_IDS: features[TASK_ID]}
    # Undo the shift of `broadcast_task_id`; padding (0) becomes 0 again.
    return {**converted,
            'encoder_task_ids': tf.maximum(features['inputs_task_ids'] - 1, 0),
            'decoder_task_ids': tf.maximum(features['targets_task_ids'] - 1, 0)}

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                ) -> Mapping[str, int]:
    """EncDecFeatureConverter's lengths plus those of the task-id features
    (1 for rank-0 `task_ids`, whose length seqio does not check)."""
    lengths = super().get_model_feature_lengths(task_feature_lengths)
    if self.rows_hold_one_task:
      return {**lengths, ROW_TASK_IDS: 1}
    return {**lengths,
            'encoder_task_ids': task_feature_lengths['inputs'],
            'decoder_task_ids': task_feature_lengths['targets']}

  def batch_shapes(self, task_feature_lengths: Mapping[str, int],
                   batch_size: int) -> dict[str, tuple[int, ...]]:
    """Model feature -> shape of a batch: `[batch]` for `task_ids`,
    `[batch, length]` for the others."""
    return {name: (batch_size,) if name == ROW_TASK_IDS else (batch_size, n)
            for name, n in self.get_model_feature_lengths(
                task_feature_lengths).items()}


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
