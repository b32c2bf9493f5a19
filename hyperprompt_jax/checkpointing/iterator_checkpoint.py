"""tf.data iterator state as an orbax checkpoint item, one file per process.

The state holds what the input pipeline needs to continue exactly where it
stopped (source offsets, shuffle buffers, mixture sampling, packing and
prefetch buffers), so restoring costs the same at step 100 as at step 100k,
and the batches that follow are those an uninterrupted run reads.
"""

import dataclasses
import tempfile

import jax
import orbax.checkpoint as ocp
import tensorflow as tf
from etils import epath

from hyperprompt_jax import errors


def _prefix(directory: epath.Path) -> str:
  # Each process reads its own shard of the data, so each keeps its own state.
  return str(directory / f'process_{jax.process_index()}-of-'
             f'{jax.process_count()}')


class StateMismatchError(ValueError):
  """A readable pipeline state that does not fit the pipeline restoring it
  (its graph changed)."""


class IteratorHandler(ocp.CheckpointHandler):
  """Saves and restores a `tf.data.Iterator` with `tf.train.Checkpoint`."""

  def save(self, directory: epath.Path, args: 'IteratorSave') -> None:
    tf.train.Checkpoint(iterator=args.iterator).write(_prefix(directory))

  def restore(self, directory: epath.Path,
              args: 'IteratorRestore') -> tf.data.Iterator:
    prefix = _prefix(directory)
    if not tf.io.gfile.exists(prefix + '.index'):
      raise FileNotFoundError(
          f'{directory} has no input-pipeline state for process '
          f'{jax.process_index()} of {jax.process_count()}')
    try:
      tf.train.Checkpoint(iterator=args.iterator).read(
          prefix).assert_consumed()
    except tf.errors.NotFoundError as e:
      # A readable state whose pipeline nodes this pipeline lacks; damaged
      # files raise other errors.
      raise StateMismatchError(
          'it is the state of another pipeline: the dataset definition '
          'changed since it was saved') from e
    return args.iterator

  def metadata(self, directory: epath.Path) -> None:
    del directory


@ocp.checkpoint_args.register_with_handler(IteratorHandler, for_save=True)
@dataclasses.dataclass
class IteratorSave(ocp.args.CheckpointArgs):
  """The iterator whose current state is saved (synchronously)."""
  iterator: tf.data.Iterator


@ocp.checkpoint_args.register_with_handler(IteratorHandler, for_restore=True)
@dataclasses.dataclass
class IteratorRestore(ocp.args.CheckpointArgs):
  """A fresh iterator over the same dataset; its state is set in place."""
  iterator: tf.data.Iterator


def check_saveable(iterator: tf.data.Iterator) -> None:
  """Raises ValueError now if checkpoints could not save `iterator`'s state.

  Called before training, so that a pipeline tf.data cannot save (e.g. one
  reading a Python generator) fails at once, not at the first checkpoint.
  """
  with tempfile.TemporaryDirectory() as directory:
    try:
      tf.train.Checkpoint(iterator=iterator).write(f'{directory}/probe')
    except (tf.errors.OpError, ValueError) as e:
      raise ValueError(
          'checkpoints cannot save the training data pipeline '
          f'({errors.first_line(e)}): build task sources '
          'from tensors or files, not Python generators or tf.py_function'
          ) from None
