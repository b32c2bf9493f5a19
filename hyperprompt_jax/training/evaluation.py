"""Per-task evaluation: teacher-forced loss plus seqio's decoded metrics.

seqio's `Evaluator` caches each task's eval split as unpacked model features
(task ids included) and computes the task's metric functions from our
predictions and scores. On the same cached examples we add the teacher-forced
`loss` and token `accuracy` of every task. Every process feeds the full eval
batch (eval data is small and identical on all hosts) and gets the full
replicated output back.
"""

import functools
import json
import math
import os
from typing import Any, Iterator, Mapping, Optional

import jax
import numpy as np
import seqio
import tensorflow as tf

from hyperprompt_jax import tables
from hyperprompt_jax.sharding import mesh as mesh_lib
from hyperprompt_jax.training import trainer as trainer_lib

Results = dict[str, dict[str, float]]


def host_batch_to_global(batch: Mapping[str, np.ndarray],
                         sharding: jax.sharding.NamedSharding) -> dict[str, jax.Array]:
  """A batch held whole by every process -> global arrays split over 'data'."""
  return {k: jax.make_array_from_callback(v.shape, sharding, lambda i, v=v: v[i])
          for k, v in batch.items()}


def padded_batches(ds: tf.data.Dataset, batch_size: int
                   ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
  """(example indices, features) with the last batch zero-padded.

  Padded rows have index -1, zero tokens and zero loss weights.
  """
  for indices, features in ds.batch(batch_size).as_numpy_iterator():
    pad = batch_size - len(indices)
    indices = np.pad(indices, (0, pad), constant_values=-1)
    features = {k: np.pad(v, [(0, pad)] + [(0, 0)] * (v.ndim - 1))
                for k, v in features.items()}
    yield indices, features


def _to_float(value: Any) -> Optional[float]:
  value = getattr(value, 'value', value)  # seqio.metrics.Scalar
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


class Evaluator:
  """Evaluates every task of a mixture that has metrics and the eval split."""

  def __init__(self, trainer, mixture_or_task_name: str,
               task_feature_lengths: Mapping[str, int], split: str = 'validation',
               batch_size: int = 32, num_examples: Optional[int] = None):
    """Caches the eval examples.

    Args:
      trainer: the `trainer.Trainer` whose model and mesh are used.
      mixture_or_task_name: tasks to evaluate.
      task_feature_lengths: maximum 'inputs' / 'targets' lengths; targets
        length is also the maximum decode length.
      split: eval split.
      batch_size: global eval batch size (rounded up to a multiple of the
        mesh's 'data' size).
      num_examples: evaluate only this many examples of each task.
    """
    model = trainer.model
    self._trainer = trainer
    data_size = trainer.mesh.shape['data']
    self._batch_size = math.ceil(batch_size / data_size) * data_size
    self._seqio = seqio.Evaluator(
        mixture_or_task_name, model.feature_converter_cls(pack=False),
        eval_split=split, sequence_length=dict(task_feature_lengths),
        num_examples=num_examples, async_compute_metrics=False)
    replicated = mesh_lib.replicated(trainer.mesh)
    in_shardings = (trainer.param_shardings, trainer.batch_sharding)
    self._predict = jax.jit(model.predict_batch, in_shardings=in_shardings,
                            out_shardings=replicated)
    self._score = jax.jit(model.score_batch, in_shardings=in_shardings,
                          out_shardings=replicated)

  @property
  def task_names(self) -> list[str]:
    return [t.name for t in self._seqio.eval_tasks]

  def _run(self, fn, params, ds: tf.data.Dataset):
    """[(index, output row)] of `fn(params, batch)` over a cached dataset."""
    outputs = []
    for indices, batch in padded_batches(ds, self._batch_size):
      with self._trainer.activate():
        out = np.asarray(fn(params, host_batch_to_global(
            batch, self._trainer.batch_sharding)))
      outputs += [(int(i), row) for i, row in zip(indices, out) if i >= 0]
    return outputs

  def _teacher_forced(self, params, ds: tf.data.Dataset) -> dict[str, float]:
    """Token-weighted loss and accuracy over one task's examples."""
    metrics = []
    for _, batch in padded_batches(ds, self._batch_size):
      metrics.append(self._trainer.eval_step(
          params, host_batch_to_global(batch, self._trainer.batch_sharding)))
    merged = functools.reduce(trainer_lib.merge_metrics,
                              jax.device_get(metrics))
    return {'loss': float(merged['loss'].compute()),
            'token_accuracy': float(merged['accuracy'].compute())}

  def evaluate(self, params, step: int) -> Results:
    """{task: {metric: value}} for every eval task."""
    predict_fn = lambda ds: [(i, row.tolist())
                             for i, row in self._run(self._predict, params, ds)]
    score_fn = lambda ds: [(i, float(s))
                           for i, s in self._run(self._score, params, ds)]
    metrics, _ = self._seqio.evaluate(compute_metrics=True, step=step,
                                      predict_fn=predict_fn, score_fn=score_fn)
    results: Results = {}
    for task, task_metrics in (metrics.result() or {}).items():
      results[task] = self._teacher_forced(
          params, self._seqio.cached_model_datasets[task])
      for name, value in task_metrics.items():
        if (value := _to_float(value)) is not None:
          results[task][name] = value
    return results


def format_table(results: Results) -> str:
  """A fixed-width table: one row per task, one column per metric."""
  columns = sorted({m for metrics in results.values() for m in metrics})
  width = max([len('task')] + [len(t) for t in results])
  return tables.text_table(
      [tables.Column('task', width, '<'),
       *[tables.Column(c, 14) for c in columns]],
      [[task, *[f'{metrics[c]:.4f}' if c in metrics else '-' for c in columns]]
       for task, metrics in sorted(results.items())], sep='  ')


def write_results(model_dir: str, step: int, results: Results) -> str:
  """Writes MODEL_DIR/eval_results.json; returns its path."""
  path = os.path.join(model_dir, 'eval_results.json')
  with tf.io.gfile.GFile(path, 'w') as f:
    json.dump({'step': step, 'results': results}, f, indent=2, sort_keys=True)
  return path
