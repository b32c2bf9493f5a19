"""orbax checkpoints of the train state plus the data position.

Layout: `MODEL_DIR/checkpoints/<step>/{state,data}`. `state` is the sharded
`TrainState` (restored straight into its target shardings); `data` is JSON
with the number of batches consumed. Saves are atomic (orbax writes to a
temporary directory then renames), so an interrupted save never shadows the
previous checkpoint.
"""

import dataclasses
import pathlib
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from hyperprompt_jax import train_state as train_state_lib


class CheckpointError(RuntimeError):
  """A missing or unreadable checkpoint; the message is one line."""


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """When to save and how many to keep.

  Attributes:
    period: save every `period` steps (the final step is always saved).
    keep: number of most recent checkpoints kept; None keeps all.
  """
  period: int = 1000
  keep: Optional[int] = 3


def checkpoint_dir(model_dir: str) -> pathlib.Path:
  return pathlib.Path(model_dir) / 'checkpoints'


class Checkpointer:
  """Saves and restores (TrainState, data position) under a model dir."""

  def __init__(self, model_dir: str, cfg: CheckpointConfig = CheckpointConfig(),
               read_only: bool = False):
    self.directory = checkpoint_dir(model_dir)
    if read_only and not self.directory.is_dir():
      raise CheckpointError(
          f'no checkpoints in {self.directory}: pass the MODEL_DIR of a '
          'training run (it holds checkpoints/<step>/)')
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=cfg.keep, save_interval_steps=cfg.period,
            read_only=read_only, create=not read_only),
        item_names=('state', 'data'))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, state: train_state_lib.TrainState, data_position: int,
           force: bool = False) -> bool:
    """Saves at `state.step` if due (or `force`); returns whether it did."""
    return self._manager.save(
        int(state.step),
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave({'batches_consumed': int(data_position)})),
        force=force)

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

  def _restore(self, step: int, **args: ocp.args.CheckpointArgs):
    try:
      return self._manager.restore(step, args=ocp.args.Composite(**args))
    except Exception as e:  # orbax raises many types for damaged files.
      detail = str(e).splitlines()[0][:200] if str(e) else ''
      raise CheckpointError(
          f'checkpoint {self.directory / str(step)} is unreadable '
          f'({type(e).__name__}: {detail}); delete that step directory to '
          'use the previous one') from e

  def restore(self, abstract_state: train_state_lib.TrainState,
              step: Optional[int] = None
              ) -> tuple[train_state_lib.TrainState, int]:
    """Restores (state, data position) at `step` (default: latest).

    Args:
      abstract_state: a `TrainState` of `jax.ShapeDtypeStruct`s with
        shardings, restored straight into those shardings.
      step: the step to restore; None for the latest.

    Returns:
      The restored state and the number of batches consumed.
    """
    step = self._checked_step(step)
    restored = self._restore(step, state=ocp.args.StandardRestore(abstract_state),
                             data=ocp.args.JsonRestore())
    return restored.state, int(restored.data['batches_consumed'])

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
    restored = self._restore(step, state=ocp.args.PyTreeRestore(
        item=target, partial_restore=True,
        restore_args=jax.tree.map(
            lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target)))
    return restored.state['params'], step

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
