"""Task ids: the integer that tells the model which task an example belongs to.

A task's id is baked into the task at registration by the `add_task_id`
preprocessor, so every data path (our trainer, t5x's train binary, seqio's
evaluator) sees the same id without extra plumbing. The id map of a mixture is
read back from the registered tasks, so it can never drift from the data.
"""

import functools
import json
import os
import uuid
from collections.abc import Mapping

import seqio
import tensorflow as tf

from hyperprompt_jax.tasks import lookup


@seqio.map_over_dataset
def add_task_id(example: Mapping[str, tf.Tensor], task_id: int):
  """Adds the scalar int32 feature `task_id` to every example."""
  return {**example, 'task_id': tf.constant(task_id, tf.int32)}


def is_add_task_id(preprocessor) -> bool:
  """Whether `preprocessor` is an `add_task_id` bound to an id."""
  return (isinstance(preprocessor, functools.partial)
          and preprocessor.func is add_task_id)


def baked_task_id(task: seqio.Task) -> int:
  """The id that `task`'s `add_task_id` preprocessor writes."""
  for preprocessor in task.preprocessors:
    if is_add_task_id(preprocessor):
      return preprocessor.keywords['task_id']
  raise ValueError(
      f"Task '{task.name}' has no add_task_id preprocessor; register it with "
      'functools.partial(add_task_id, task_id=i).')


def _owning_mixture(task_name: str) -> seqio.Mixture | None:
  """The registered mixture whose id map includes `task_name`, if any."""
  for mixture_name in sorted(seqio.MixtureRegistry.names()):
    mixture = seqio.MixtureRegistry.get(mixture_name)
    if task_name in mixture.rate_per_task_name:
      return mixture
  return None


def task_id_map(mixture_or_task_name: str) -> dict[str, int]:
  """Ordered map task name -> task id for a mixture or a task.

  A task alone gets the map of the mixture that owns its id, so that every id
  it carries is below `num_tasks` and a model trained on the mixture
  evaluates it with the same prompts.

  Raises:
    ValueError: for an unknown name, or when the ids of a mixture are not
      exactly 0..T-1.
  """
  provider = lookup.get_mixture_or_task(mixture_or_task_name)
  if isinstance(provider, seqio.Task):
    provider = _owning_mixture(provider.name) or provider
  tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
  mapping = dict(sorted(((t.name, baked_task_id(t)) for t in tasks),
                        key=lambda item: item[1]))
  if isinstance(provider, seqio.Mixture) and sorted(mapping.values()) != list(
      range(len(mapping))):
    raise ValueError(
        f"Task ids of mixture '{provider.name}' must be 0..{len(mapping) - 1}, "
        f'got {mapping}.')
  return mapping


def num_tasks(mixture_or_task_name: str) -> int:
  """Number of task ids the model needs for `mixture_or_task_name`."""
  return max(task_id_map(mixture_or_task_name).values()) + 1


def save_task_id_map(path: str, mapping: Mapping[str, int]) -> None:
  """Writes `mapping` as JSON (e.g. to MODEL_DIR/task_ids.json)."""
  directory = os.path.dirname(path)
  if directory:
    tf.io.gfile.makedirs(directory)
  # Written whole, then renamed: other processes may be reading `path`.
  partial = f'{path}.tmp-{uuid.uuid4().hex}'
  with tf.io.gfile.GFile(partial, 'w') as f:
    json.dump(dict(mapping), f, indent=2)
  tf.io.gfile.rename(partial, path, overwrite=True)


def load_task_id_map(path: str) -> dict[str, int]:
  """Reads a map written by `save_task_id_map`, in id order.

  Raises:
    ValueError: the file is damaged (not JSON, or not ids 0..n-1 by task
      name); the message is one line naming it and the fix.
  """
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  try:
    mapping = json.loads(text)
  except json.JSONDecodeError as e:
    problem = f'JSONDecodeError: {e}'
  else:
    valid = isinstance(mapping, dict) and all(
        isinstance(name, str) and isinstance(i, int)
        for name, i in mapping.items()) and sorted(
            mapping.values()) == list(range(len(mapping)))
    problem = None if valid else 'not a map of task names to the ids 0..n-1'
  if problem:
    raise ValueError(
        f'{path} is damaged ({problem}): restore it from a copy (an exported '
        'model holds one), or delete it and run train again, which rewrites '
        "it from the run's mixture")
  return dict(sorted(mapping.items(), key=lambda item: item[1]))
