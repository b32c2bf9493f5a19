"""Where GLUE/SuperGLUE examples come from: TFDS or the official local files.

The choice is a gin binding read each time a dataset is built, so it applies
whatever the order of `import hyperprompt_jax.tasks` and the binding:

    hyperprompt_jax.tasks.benchmark_source.kind = 'local'
    hyperprompt_jax.tasks.benchmark_source.glue_dir = '/data/glue_data'
    hyperprompt_jax.tasks.benchmark_source.super_glue_dir = '/data/super_glue'

Split sizes come from a table of the official sizes, so example-count mixing
rates work offline and before any data is read (TFDS under
`tfds.testing.mock_data` has no split table).
"""

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence

import gin
import seqio
import tensorflow as tf

from hyperprompt_jax.tasks import local_files


@dataclasses.dataclass(frozen=True)
class SourceConfig:
  """The gin-selected source: `kind` is 'tfds' or 'local'."""
  kind: str
  local_dirs: Mapping[str, str | None]
  tfds_data_dir: str | None


@gin.configurable(module='hyperprompt_jax.tasks')
def benchmark_source(kind: str = 'tfds', glue_dir: str | None = None,
                     super_glue_dir: str | None = None,
                     tfds_data_dir: str | None = None) -> SourceConfig:
  """Selects the GLUE/SuperGLUE source.

  Args:
    kind: 'tfds' (default) or 'local'.
    glue_dir: folder with the official GLUE folders (CoLA/, SST-2/, ...).
    super_glue_dir: folder with the official SuperGLUE folders (BoolQ/, ...).
    tfds_data_dir: TFDS data directory; None for TFDS's default.
  """
  if kind not in ('tfds', 'local'):
    raise ValueError(f"benchmark_source.kind must be 'tfds' or 'local', "
                     f"got '{kind}'.")
  return SourceConfig(kind, {'glue': glue_dir, 'super_glue': super_glue_dir},
                      tfds_data_dir)


class BenchmarkDataSource(seqio.DataSource):
  """A GLUE/SuperGLUE dataset from TFDS or local files, chosen by gin."""

  def __init__(self, benchmark: str, tfds_name: str,
               split_sizes: Mapping[str, int],
               local_files: Mapping[str, str],
               read_local: Callable[[str], Iterator[local_files.Example]],
               tfds_splits: Mapping[str, str] | None = None):
    """Constructor.

    Args:
      benchmark: 'glue' or 'super_glue' (picks the local folder binding).
      tfds_name: e.g. 'glue/cola:2.0.0'.
      split_sizes: our split name -> official number of examples.
      local_files: our split name -> file path inside the benchmark folder.
      read_local: yields the TFDS-shaped examples of one local file.
      tfds_splits: our split name -> TFDS split name, where they differ.
    """
    super().__init__(splits=tuple(split_sizes), num_input_examples=split_sizes)
    self._benchmark = benchmark
    self._tfds_name = tfds_name
    self._local_files = dict(local_files)
    self._read_local = read_local
    self._tfds_splits = {s: s for s in split_sizes} | dict(tfds_splits or {})

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def local_path(self, split: str) -> str:
    """The local file of `split` under the gin-bound benchmark folder."""
    folder = benchmark_source().local_dirs[self._benchmark]
    if folder is None:
      raise ValueError(
          f'benchmark_source.kind is local but benchmark_source.'
          f'{self._benchmark}_dir is not set.')
    return os.path.join(folder, self._local_files[split])

  def get_dataset(self, split: str = 'train', shuffle: bool = True,
                  seed: int | None = None,
                  shard_info: seqio.ShardInfo | None = None, *,
                  sequence_length=None, use_cached=False, num_epochs=1
                  ) -> tf.data.Dataset:
    """Raw examples of `split`, with the TFDS features of the dataset."""
    del sequence_length, use_cached, num_epochs  # Not used by data sources.
    config = benchmark_source()
    if config.kind == 'tfds':
      tfds_source = seqio.TfdsDataSource(
          self._tfds_name, tfds_data_dir=config.tfds_data_dir,
          splits={split: self._tfds_splits[split]})
      return tfds_source.get_dataset(split, shuffle=shuffle, seed=seed,
                                     shard_info=shard_info)
    path = self.local_path(split)
    ds = local_files.to_dataset(list(self._read_local(path)), path)
    if shard_info:
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    return ds
