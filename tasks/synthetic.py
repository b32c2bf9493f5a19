"""The built-in synthetic mixture: six digit-string tasks that need task ids.

Every task reads the same kind of input, a string of 4-8 digits such as
'47193', and the same input strings appear in every task (each task takes a
prefix of one shared pool per split), each time with a different target.
Inputs carry no task prefix, so only the task id says which mapping to apply:
a model without task conditioning cannot beat guessing on the conflicts.
`synthetic_prefixed_mixture` holds the same tasks with the task name before
the input ('reverse: 47193'), as T5 writes GLUE inputs: the fair setting for
comparing conditioning methods against plain multi-task T5.
Sizes span 100x (20000 to 200 training examples). Data are generated in
memory, deterministically from `synthetic_data_seed.seed`; evaluation inputs
never occur in training.
"""

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import gin
import numpy as np
import seqio
import tensorflow as tf

from hyperprompt_jax.tasks import metrics
from hyperprompt_jax.tasks import mixtures
from hyperprompt_jax.tasks import postprocessors

MIXTURE_NAME = 'synthetic_mixture'
PREFIXED_MIXTURE_NAME = 'synthetic_prefixed_mixture'
MIN_DIGITS, MAX_DIGITS = 4, 8
EVAL_SIZE = 200
# Evaluation splits come first: each split excludes the inputs of those before.
SPLITS = ('test', 'validation', 'train')
_YES_NO = ('no', 'yes')


class SyntheticTask(NamedTuple):
  """One synthetic task.

  Attributes:
    train_size: number of training examples.
    target_fn: digit string -> target string.
    postprocess_fn: decoded text -> what `metric_fns` score.
    metric_fns: seqio metric functions.
  """
  train_size: int
  target_fn: Callable[[str], str]
  postprocess_fn: Callable
  metric_fns: Sequence[metrics.MetricFn]


def _yes_no(condition: Callable[[str], bool]) -> Callable[[str], str]:
  return lambda digits: _YES_NO[condition(digits)]


_CLASS_ID = functools.partial(postprocessors.class_id, label_classes=_YES_NO)

# In task-id order: high-resource first.
SYNTHETIC_TASKS = {
    'reverse': SyntheticTask(
        20000, lambda d: d[::-1], postprocessors.stripped_text,
        (metrics.accuracy,)),
    'max_digit': SyntheticTask(
        8000, max, postprocessors.stripped_text, (metrics.accuracy,)),
    'digit_sum': SyntheticTask(
        4000, lambda d: str(sum(map(int, d))), postprocessors.to_float,
        (metrics.accuracy, metrics.pearson_spearman)),
    'count_even': SyntheticTask(
        1500, lambda d: str(sum(int(c) % 2 == 0 for c in d)),
        postprocessors.to_float, (metrics.accuracy, metrics.pearson_spearman)),
    'first_gt_last': SyntheticTask(
        500, _yes_no(lambda d: d[0] > d[-1]), _CLASS_ID,
        (metrics.accuracy, metrics.f1)),
    'contains_seven': SyntheticTask(
        200, _yes_no(lambda d: '7' in d), _CLASS_ID,
        (metrics.f1, metrics.matthews_corrcoef)),
}


@gin.configurable(module='hyperprompt_jax.tasks')
def synthetic_data_seed(seed: int = 0) -> int:
  """Seed of the synthetic data (gin: `synthetic_data_seed.seed`)."""
  return seed


def split_sizes(name: str) -> dict[str, int]:
  """Examples per split of synthetic task `name`."""
  return {'train': SYNTHETIC_TASKS[name].train_size,
          'validation': EVAL_SIZE, 'test': EVAL_SIZE}


@functools.lru_cache(maxsize=8)
def input_pool(split: str, seed: int) -> tuple[str, ...]:
  """The digit strings that every task of `split` takes its inputs from."""
  excluded = set()
  for earlier in SPLITS[:SPLITS.index(split)]:
    excluded.update(input_pool(earlier, seed))
  size = max(t.train_size for t in SYNTHETIC_TASKS.values()) if (
      split == 'train') else EVAL_SIZE
  rng = np.random.default_rng([seed, SPLITS.index(split)])
  pool = []
  while len(pool) < size:
    length = rng.integers(MIN_DIGITS, MAX_DIGITS + 1)
    digits = ''.join(map(str, rng.integers(0, 10, length)))
    if digits not in excluded:
      pool.append(digits)
  return tuple(pool)


def examples(name: str, split: str, seed: int) -> list[tuple[str, str]]:
  """(input, target) pairs of synthetic task `name`."""
  task = SYNTHETIC_TASKS[name]
  inputs = input_pool(split, seed)[:split_sizes(name)[split]]
  return [(digits, task.target_fn(digits)) for digits in inputs]


def _dataset_fn(split: str, shuffle_files: bool, seed: int | None = None, *,
                name: str) -> tf.data.Dataset:
  """seqio dataset_fn: {'inputs', 'targets'} strings; order is fixed."""
  del shuffle_files, seed  # One in-memory shard; the Task shuffles examples.
  inputs, targets = zip(*examples(name, split, synthetic_data_seed()))
  return tf.data.Dataset.from_tensor_slices(
      {'inputs': list(inputs), 'targets': list(targets)})


@seqio.map_over_dataset
def _prefix_inputs(x, prefix: str):
  return {**x, 'inputs': tf.strings.join([prefix, x['inputs']])}


def task_name(name: str, prefixed: bool = False) -> str:
  """Registered name of synthetic task `name`, e.g. 'synthetic_reverse' or,
  prefixed, 'synthetic_prefixed_reverse'."""
  return f'synthetic_prefixed_{name}' if prefixed else f'synthetic_{name}'


def _register(mixture_name: str, prefixed: bool) -> None:
  specs = [
      mixtures.TaskSpec(
          task_name(name, prefixed),
          seqio.FunctionDataSource(
              functools.partial(_dataset_fn, name=name), splits=SPLITS,
              num_input_examples=split_sizes(name)),
          preprocessors=[functools.partial(_prefix_inputs,
                                           prefix=f'{name}: ')]
          if prefixed else [],
          postprocess_fn=task.postprocess_fn, metric_fns=task.metric_fns)
      for name, task in SYNTHETIC_TASKS.items()]
  mixtures.register_mixture(mixture_name, specs, seqio.ByteVocabulary())


def register() -> None:
  """Registers the synthetic tasks and mixtures (byte vocabulary):
  `synthetic_mixture` and `synthetic_prefixed_mixture`, with the same task
  ids in the same order."""
  _register(MIXTURE_NAME, prefixed=False)
  _register(PREFIXED_MIXTURE_NAME, prefixed=True)
