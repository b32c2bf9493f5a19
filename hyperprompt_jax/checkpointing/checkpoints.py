"""orbax checkpoints of the train state plus the input pipeline's state.

Layout: `MODEL_DIR/checkpoints/<step>/{state,data,pipeline}`. `state` is the
sharded `TrainState` (restored straight into its target shardings, whatever
mesh saved it); `data` is JSON with the number of batches consumed, the input
stream's seed and the number of processes; `pipeline` is each process's
tf.data iterator state (`iterator_checkpoint`). Saves are atomic (orbax
writes to a temporary directory then renames), so an interrupted save never
shadows the previous checkpoint.

Resuming never loses data: a latest checkpoint that cannot be read is moved
aside to `MODEL_DIR/checkpoints_unreadable/` (never deleted) and the previous
one is used; a checkpoint of another model (variant, size, number of tasks)
is an error that names the first parameter that differs.
"""

import contextlib
import dataclasses
import pathlib
import re
import shutil
from typing import Any, Iterator, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from hyperprompt_jax.checkpointing import iterator_checkpoint
from hyperprompt_jax.data import pipeline as data_lib
from hyperprompt_jax import errors
from hyperprompt_jax.sharding import partitioning

UNREADABLE_DIR = 'checkpoints_unreadable'
# orbax writes a step (and each item) under this suffix, then renames it.
_TMP_SUFFIX = '.orbax-checkpoint-tmp'
# The trainer's `TrainState` (training/train_state.py), or any pytree of
# arrays: checkpointing sits below training and does not import it.
State = Any


class CheckpointError(RuntimeError):
  """A missing, unreadable or mismatching checkpoint; the message is one line."""


class CheckpointSaveError(CheckpointError):
  """A save failed (disk full, permission or quota lost); its partial files
  are removed and earlier checkpoints are untouched."""


class CheckpointMismatchError(CheckpointError):
  """A readable checkpoint of another model (variant, size, tasks)."""


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """When to save and how many to keep.

  Attributes:
    period: save every `period` steps (the final step is always saved).
    keep: number of most recent checkpoints kept; None keeps all.
  """
  period: int = 1000
  keep: Optional[int] = 3


def _io_cause(e: Exception) -> str:
  """What went wrong in a failed write, without the file it was writing:
  `No space left on device` of TensorFlow's `<file>; No space left on device
  [Op:SaveV2]`, an OSError's strerror."""
  if isinstance(e, OSError) and e.strerror:
    return e.strerror
  text = errors.first_line(e, max_chars=None)
  return re.sub(r'\s*\[Op:\w+\]$', '', text.rsplit('; ', 1)[-1])[:200]


def checkpoint_dir(model_dir: str) -> pathlib.Path:
  return pathlib.Path(model_dir) / 'checkpoints'


def _shapes_by_path(tree: Any) -> dict[str, tuple[int, ...]]:
  """'/'-joined key path -> shape of every leaf with a shape."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'/'.join(partitioning.key_names(path)): tuple(leaf.shape)
          for path, leaf in leaves if hasattr(leaf, 'shape')}


def tree_mismatch(expected: Any, found: Any) -> Optional[str]:
  """How `found` (a checkpoint's tree) differs from `expected`, or None.

  Names the first differing parameter (in `expected`'s order) with its
  expected and found shape.
  """
  want, have = _shapes_by_path(expected), _shapes_by_path(found)
  for path, shape in want.items():
    if path not in have:
      return f'{path} (shape {shape}) is missing from the checkpoint'
    if have[path] != shape:
      return f'{path} has shape {have[path]} in the checkpoint, {shape} in the model'
  extra = [path for path in have if path not in want]
  if extra:
    return (f'{extra[0]} (shape {have[extra[0]]}) is in the checkpoint but not '
            'in the model')
  return None


class Checkpointer:
  """Saves and restores (TrainState, input pipeline) under a model dir."""

  def __init__(self, model_dir: str, cfg: CheckpointConfig = CheckpointConfig(),
               read_only: bool = False):
    self.directory = checkpoint_dir(model_dir)
    if read_only and not self.directory.is_dir():
      raise CheckpointError(
          f'no checkpoints in {self.directory}: pass the MODEL_DIR of a '
          'training run (it holds checkpoints/<step>/)')
    # A save cut short (kill -9, a second Ctrl-C) leaves a temporary
    # folder; the next trainer removes it.
    self._options = ocp.CheckpointManagerOptions(
        max_to_keep=cfg.keep, save_interval_steps=cfg.period,
        read_only=read_only, create=not read_only,
        cleanup_tmp_directories=not read_only)
    self._manager = self._new_manager()
    self._writing: Optional[int] = None  # The step of the latest save.

  def _new_manager(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(self.directory, options=self._options,
                                 item_names=('state', 'data', 'pipeline'))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def reached_preemption(self, step: int) -> bool:
    """Whether all processes agreed to stop at `step` (JAX's preemption
    sync point; False where the distributed runtime does not provide it)."""
    return self._manager.reached_preemption(step)

  def save(self, state: State,
           batches: data_lib.BatchIterator, force: bool = False) -> bool:
    """Saves at `state.step` if due (or `force`); returns whether it did.

    The pipeline's state is captured now, before the call returns; the
    arrays are written in the background.

    Raises:
      CheckpointSaveError: this save, or the previous one still being
        written, failed.
    """
    record = {'batches_consumed': batches.position, 'input_seed': batches.seed,
              'process_count': jax.process_count()}
    with self._saving(int(state.step)):
      saved = self._manager.save(
          int(state.step),
          args=ocp.args.Composite(
              state=ocp.args.StandardSave(state),
              data=ocp.args.JsonSave(record),
              pipeline=iterator_checkpoint.IteratorSave(batches.iterator)),
          force=force)
    if saved:
      self._writing = int(state.step)
    return saved

  @contextlib.contextmanager
  def _saving(self, step: Optional[int]) -> Iterator[None]:
    """Turns a failed save into one CheckpointSaveError, after removing the
    temporary folders it left (saves are atomic: nothing else changed)."""
    try:
      yield
    except Exception as e:  # orbax, TensorFlow and the OS raise many types.
      if jax.process_index() == 0:
        for partial in self.directory.glob(f'*{_TMP_SUFFIX}*'):
          shutil.rmtree(partial, ignore_errors=True)
      latest = self.latest_step()
      kept = (f'step {latest} is kept' if latest is not None
              else 'no earlier checkpoint')
      raise CheckpointSaveError(
          f'could not save checkpoint {step} in {self.directory} '
          f'({_io_cause(e)}; {kept}): free space, or restore write '
          'permission or quota there, then run the same command again '
          'to resume') from e

  def _checked_step(self, step: Optional[int]) -> int:
    """`step`, or the latest one, after checking that it was saved."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f'no checkpoint found in {self.directory}')
    if step not in self._manager.all_steps():
      raise CheckpointError(
          f'no checkpoint for step {step} in {self.directory}; available: '
          f'{sorted(self._manager.all_steps())}')
    return step

  def _unreadable(self, step: int, e: Exception) -> CheckpointError:
    return CheckpointError(f'checkpoint {self.directory / str(step)} is '
                           f'unreadable ({type(e).__name__}: '
                           f'{errors.first_line(e)})')

  def _check_tree(self, step: int, abstract_state: Any,
                  item: Optional[str] = None) -> None:
    """Raises CheckpointMismatchError if the saved tree is another model's.

    Args:
      step: the checkpoint step.
      abstract_state: the expected tree (or `{'params': ...}` with `item`).
      item: compare only this top-level entry of the saved state.
    """
    try:
      found = ocp.StandardCheckpointHandler().metadata(
          self.directory / str(step) / 'state')
    except Exception as e:  # orbax raises many types for damaged files.
      raise self._unreadable(step, e) from e
    if item is not None:
      found, abstract_state = {item: found[item]}, {item: abstract_state[item]}
    mismatch = tree_mismatch(abstract_state, found)
    if mismatch:
      raise CheckpointMismatchError(
          f'checkpoint {self.directory / str(step)} was saved by another '
          f'model: {mismatch}; use the variant, size and mixture (number of '
          'tasks) it was trained with, or a new MODEL_DIR')

  def _restore(self, step: int, **args: ocp.args.CheckpointArgs):
    try:
      return self._manager.restore(step, args=ocp.args.Composite(**args))
    except Exception as e:  # orbax raises many types for damaged files.
      raise self._unreadable(step, e) from e

  def restore(self, abstract_state: State,
              batches: data_lib.BatchIterator,
              step: Optional[int] = None) -> State:
    """Restores the state at `step` (default: latest) and the input stream.

    The state is restored into `abstract_state`'s shardings, whatever mesh
    saved it. The input stream continues where it stopped; where its saved
    state does not fit this run (another number of processes, a pipeline
    whose graph changed), it restarts re-seeded (`data_lib.restart_seed`),
    with one printed line. Damaged files of any item make the step
    unreadable (CheckpointError).

    Args:
      abstract_state: a `TrainState` of `jax.ShapeDtypeStruct`s with
        shardings.
      batches: a fresh iterator over the run's training data; its stream and
        position are set to the checkpoint's.
      step: the step to restore; None for the latest.

    Returns:
      The restored state.
    """
    step = self._checked_step(step)
    self._check_tree(step, abstract_state)
    restored = self._restore(
        step, state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore())
    try:
      position = int(restored.data['batches_consumed'])
    except (TypeError, KeyError, ValueError) as e:
      raise self._unreadable(step, e) from e
    self._restore_stream(step, restored.data, batches)
    batches.position = position
    return restored.state

  def _restore_stream(self, step: int, record: dict[str, Any],
                      batches: data_lib.BatchIterator) -> None:
    """Sets `batches` to the saved stream, or restarts it re-seeded where the
    saved state does not fit this run on every process.

    Raises:
      CheckpointError: the saved state is damaged (unreadable files).
    """
    seed = record.get('input_seed', batches.seed)
    if seed != batches.seed:  # Restarted once before: continue that stream.
      batches.restart(seed)
    saved_processes = record.get('process_count', jax.process_count())
    problem = None
    if saved_processes != jax.process_count():
      problem = (f'saved by {saved_processes} processes, resumed on '
                 f'{jax.process_count()}')
    else:
      try:
        self._restore(step, pipeline=iterator_checkpoint.IteratorRestore(
            batches.iterator))
      except CheckpointError as e:
        if not isinstance(e.__cause__, iterator_checkpoint.StateMismatchError):
          raise
        problem = str(e.__cause__)
    if jax.process_count() > 1:
      failed = multihost_utils.process_allgather(np.asarray(problem is not None))
      if problem is None and failed.any():
        problem = 'another process could not restore its part'
    if problem is None:
      return
    batches.restart(data_lib.restart_seed(seed, step, jax.process_count()))
    if jax.process_index() == 0:
      print(f'checkpoint {self.directory / str(step)}: the input stream '
            f'cannot continue ({problem}); the train state is restored as '
            f'saved and the stream restarts with seed {batches.seed} '
            '(docs/training.md, "Resuming elsewhere")', flush=True)

  def _set_aside(self, step: int) -> pathlib.Path:
    """Moves checkpoint `step` to UNREADABLE_DIR (never deletes it)."""
    target_dir = self.directory.parent / UNREADABLE_DIR
    target = target_dir / str(step)
    suffix = 1
    while target.exists():
      target, suffix = target_dir / f'{step}.{suffix}', suffix + 1
    if jax.process_index() == 0:
      target_dir.mkdir(parents=True, exist_ok=True)
      shutil.move(str(self.directory / str(step)), str(target))
    multihost_utils.sync_global_devices(f'checkpoint {step} set aside')
    self._manager.close()
    self._manager = self._new_manager()
    return target

  def restore_latest_readable(self, abstract_state: State,
                              batches: data_lib.BatchIterator
                              ) -> Optional[State]:
    """Restores the latest checkpoint that reads, or returns None if none.

    An unreadable checkpoint (damaged or partly written files) is moved to
    `MODEL_DIR/checkpoints_unreadable/<step>`, with one printed line, and the
    one before it is tried. A checkpoint of another model raises at once:
    every older one would mismatch too, and nothing is moved.

    Args:
      abstract_state: as for `restore`.
      batches: as for `restore`.
    """
    while (step := self.latest_step()) is not None:
      try:
        return self.restore(abstract_state, batches, step)
      except CheckpointMismatchError:
        raise
      except CheckpointError as e:
        moved = self._set_aside(step)
        if jax.process_index() == 0:
          print(f'{e}: moved it to {moved}; trying the previous checkpoint',
                flush=True)
    return None

  def restore_params(self, abstract_params: Any,
                     step: Optional[int] = None) -> tuple[Any, int]:
    """Restores only the params at `step` (default: latest), for inference.

    The optimizer state is never read.

    Args:
      abstract_params: the params as `jax.ShapeDtypeStruct`s with shardings.
      step: the step to restore; None for the latest.

    Returns:
      The params and the step they come from.
    """
    step = self._checked_step(step)
    target = {'params': abstract_params}
    self._check_tree(step, target, item='params')
    restored = self._restore(step, state=ocp.args.PyTreeRestore(
        item=target, partial_restore=True,
        restore_args=jax.tree.map(
            lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target)))
    return restored.state['params'], step

  def wait_until_finished(self) -> None:
    """Waits for the save being written.

    Raises:
      CheckpointSaveError: it failed.
    """
    with self._saving(self._writing):
      self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
