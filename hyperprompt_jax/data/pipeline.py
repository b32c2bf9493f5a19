"""seqio datasets as global, sharded batches with a resumable position.

Each process reads its own shard of the mixture (`seqio.ShardInfo`) and
feeds its slice of the global batch; `jax.make_array_from_process_local_data`
assembles the global `jax.Array` split over the mesh's 'data' axis.

Checkpoints save the tf.data iterator's state (`iterator_checkpoint`), so a
resumed run reads exactly the batches an uninterrupted run would have read,
at a cost that does not grow with the step; the number of batches consumed,
the stream's seed and the number of processes are saved beside it. Where
that state cannot be used (another number of processes, or a pipeline whose
graph changed), the stream restarts with a seed drawn from the run's seed,
the step and the process count (`restart_seed`), so no earlier sequence of
batches is replayed.
"""

import dataclasses
from typing import Any, Callable, Iterator, Mapping, Optional, Type

import jax
import numpy as np
import seqio
import tensorflow as tf
from jax.sharding import NamedSharding


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  """What to read, as t5x's `utils.DatasetConfig`.

  Attributes:
    mixture_or_task_name: a registered seqio task or mixture.
    task_feature_lengths: e.g. {'inputs': 512, 'targets': 114}.
    split: dataset split.
    batch_size: global batch size (all processes together).
    shuffle: shuffle the examples (training).
    seed: seeds shuffling and mixture sampling; fixed so resumes are exact.
    pack: pack several examples per row (t5x's default for training).
    use_cached: read seqio's offline cache.
    autotune: tf.data autotuning. False fixes every AUTOTUNE parallelism at
      the core count and drops the tuning thread: the same batches in the
      same order, with less CPU per batch where XLA shares a few cores (the
      tiny CPU runs set it; docs/benchmarks.md).
  """
  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int]
  split: str = 'train'
  batch_size: int = 32
  shuffle: bool = True
  seed: Optional[int] = 42
  pack: bool = True
  use_cached: bool = False
  autotune: bool = True


def local_batch_size(batch_size: int) -> int:
  """This process's share of a global batch."""
  if batch_size % jax.process_count():
    raise ValueError(f'BATCH_SIZE={batch_size} is not divisible by the '
                     f'{jax.process_count()} processes: change BATCH_SIZE')
  return batch_size // jax.process_count()


def get_dataset(cfg: DatasetConfig,
                feature_converter_cls: Type[seqio.FeatureConverter],
                num_epochs: Optional[int] = None) -> tf.data.Dataset:
  """This process's batches of model features, [local_batch, length] each."""
  shard = seqio.ShardInfo(index=jax.process_index(),
                          num_shards=jax.process_count())
  ds = seqio.get_dataset(
      cfg.mixture_or_task_name,
      task_feature_lengths=dict(cfg.task_feature_lengths),
      dataset_split=cfg.split,
      shuffle=cfg.shuffle,
      num_epochs=num_epochs,
      feature_converter=feature_converter_cls(pack=cfg.pack),
      shard_info=shard,
      use_cached=cfg.use_cached,
      seed=cfg.seed)
  ds = ds.batch(local_batch_size(cfg.batch_size), drop_remainder=True)
  if not cfg.autotune:
    options = tf.data.Options()
    options.autotune.enabled = False
    ds = ds.with_options(options)
  return ds


TASK_ID_FEATURES = ('task_ids', 'encoder_task_ids', 'decoder_task_ids')


def check_task_ids(batch: Mapping[str, np.ndarray], num_tasks: int,
                   one_task_per_row: bool = False) -> None:
  """Raises ValueError unless every task id lies in [0, num_tasks) and, with
  `one_task_per_row`, every packed row's examples are of one task.

  Rows of one task carry `task_ids` `[batch]`; packed rows that may mix
  tasks `encoder_task_ids` / `decoder_task_ids` `[batch, length]`, which
  `one_task_per_row` rejects where a row mixes tasks.

  Under `jit` an id out of range would be silently clamped by the gathers,
  and a row of several tasks routed by its first, so both are checked here,
  on the host, before the step.
  """
  for name in TASK_ID_FEATURES:
    ids = batch.get(name)
    if ids is None or not ids.size:
      continue
    bad = ids[(ids < 0) | (ids >= num_tasks)]
    if bad.size:
      raise ValueError(
          f'{name} holds task id {int(bad[0])}, outside [0, {num_tasks}) of '
          f'NUM_TASKS={num_tasks}: set NUM_TASKS to the number of tasks of the '
          'mixture (gin: NUM_TASKS = @tasks.num_tasks())')
    segments = None if name == 'task_ids' else batch.get(
        name.replace('_task', '_segment'))
    if one_task_per_row and segments is not None:
      mixed = np.any((segments > 0) & (ids != ids[:, :1]), axis=1)
      if mixed.any():
        raise ValueError(
            f'Packed row {int(np.argmax(mixed))} of the batch holds examples '
            f'of several tasks ({name}), but HyperPromptConfig.'
            'one_task_per_row routes each row by one task: pack with '
            'HyperPromptEncDecFeatureConverter(one_task_per_row=True), or set '
            'ONE_TASK_PER_ROW = False')


def restart_seed(seed: Optional[int], step: int,
                 process_count: int) -> Optional[int]:
  """The seed of an input stream restarted at `step` on `process_count`
  processes: another stream than the run's own and than a restart at any
  other step or process count (None stays None: unseeded)."""
  if seed is None:
    return None
  entropy = np.random.SeedSequence([seed, step, process_count])
  return int(entropy.generate_state(1)[0] >> 1)  # A non-negative int32.


class BatchIterator:
  """Global sharded batches from a per-process dataset, counting its position.

  `iterator` is the underlying tf.data iterator, whose state checkpoints save
  and restore (`iterator_checkpoint`); `seed` is the seed it was built with.
  """

  def __init__(self, make_dataset: Callable[[Optional[int]], tf.data.Dataset],
               sharding: NamedSharding, seed: Optional[int],
               num_tasks: Optional[int] = None,
               one_task_per_row: bool = False):
    """Reads `make_dataset(seed)` from its start.

    Args:
      make_dataset: seed -> this process's batches of model features.
      sharding: the global batch sharding.
      seed: the seed of the stream.
      num_tasks: when given, every batch's task ids are checked against it.
      one_task_per_row: with `num_tasks`, also check that packed rows hold
        one task each.
    """
    self._make_dataset = make_dataset
    self._sharding = sharding
    self._num_tasks = num_tasks
    self._one_task_per_row = one_task_per_row
    self.position = 0
    self.restart(seed)

  def restart(self, seed: Optional[int]) -> None:
    """Reads `make_dataset(seed)` from its start (the position is kept)."""
    self.seed = seed
    self.iterator = iter(self._make_dataset(seed))

  def __iter__(self) -> Iterator[Mapping[str, jax.Array]]:
    return self

  def __next__(self) -> Mapping[str, jax.Array]:
    local = {k: v.numpy() for k, v in next(self.iterator).items()}
    if self._num_tasks is not None:
      check_task_ids(local, self._num_tasks, self._one_task_per_row)
    self.position += 1
    return to_global(local, self._sharding)


def training_batches(cfg: DatasetConfig,
                     feature_converter_cls: Type[seqio.FeatureConverter],
                     sharding: NamedSharding, num_tasks: Optional[int] = None,
                     one_task_per_row: bool = False) -> BatchIterator:
  """The run's training batches (`get_dataset`), seeded with `cfg.seed`;
  arguments as `BatchIterator`'s."""
  return BatchIterator(
      lambda seed: get_dataset(dataclasses.replace(cfg, seed=seed),
                               feature_converter_cls),
      sharding, cfg.seed, num_tasks, one_task_per_row)


def to_global(local: Mapping[str, np.ndarray],
              sharding: NamedSharding) -> dict[str, Any]:
  """This process's rows -> global arrays split over the batch sharding.

  One call for the whole batch: per-feature calls cost twice the host time,
  which a CPU-bound input pipeline feels.
  """
  return jax.make_array_from_process_local_data(
      sharding, {k: np.asarray(v) for k, v in local.items()})
