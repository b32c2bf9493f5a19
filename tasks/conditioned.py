"""Task conditioning for seqio tasks registered elsewhere ("bring your own").

    import seqio
    from hyperprompt_jax import tasks

    tasks.add_conditioned_mixture('my_mixture', ['my_task_a', ('my_task_b', 2.0)])

registers `my_mixture.my_task_a` (task id 0) and `my_mixture.my_task_b` (id 1):
the original tasks' source, preprocessors, output features, postprocessor
and metrics, plus the `add_task_id` preprocessor; and the mixture
`my_mixture` of them, which keeps the `task_id` feature. Train on it like any
mixture of this package (`MIXTURE_OR_TASK_NAME = 'my_mixture'`, our trainer
or `t5x.train`); `task_id_map('my_mixture')` gives its ids.
"""

import functools
from collections.abc import Callable, Sequence

import seqio

from hyperprompt_jax.tasks import mixtures
from hyperprompt_jax.tasks import task_ids

Rate = float | Callable[[seqio.Task], float]


def conditioned_task_name(mixture_name: str, task_name: str) -> str:
  """The name of `task_name`'s id-carrying copy in `mixture_name`."""
  return f'{mixture_name}.{task_name}'  # '/' is not allowed in task names.


def _register_conditioned_task(mixture_name: str, task: seqio.Task,
                               task_id: int) -> str:
  """Registers `task` with its id baked in; returns the new task's name."""
  name = conditioned_task_name(mixture_name, task.name)
  # A task of another mixture of ours keeps its preprocessing, not its id.
  preprocessors = [p for p in task.preprocessors
                   if not task_ids.is_add_task_id(p)]
  # seqio lists metric functions among the metric objects too, wrapped.
  metric_objs = [m for m in task.metric_objs
                 if not isinstance(m, seqio.metrics.PassthroughLegacyMetric)]
  seqio.TaskRegistry.add(
      name,
      source=task.source,
      output_features=task.output_features,
      preprocessors=[*preprocessors,
                     functools.partial(task_ids.add_task_id, task_id=task_id)],
      postprocess_fn=task.postprocessor,
      metric_fns=task.metric_fns,
      metric_objs=metric_objs,
      shuffle_buffer_size=task.shuffle_buffer_size,
      source_info=task.source_info)
  return name


def add_conditioned_mixture(
    mixture_name: str, tasks: Sequence[str | tuple[str, Rate]]
) -> seqio.Mixture:
  """Registers id-carrying copies of registered seqio tasks, and their mixture.

  Args:
    mixture_name: the new mixture's name; the copies are named
      `<mixture_name>.<task name>`.
    tasks: registered task names, each alone or with its mixing rate (a number
      or a function of the task); a name alone gets `mixing_rate`
      (examples-proportional, set by gin), which needs the source to know its
      number of examples. Task ids follow this order: 0, 1, ...

  Returns:
    The registered mixture (a `TaskIdMixture`).

  Raises:
    ValueError: a task is not registered, or a name is already taken.
  """
  entries = []
  for task_id, entry in enumerate(tasks):
    task_name, rate = (entry, mixtures.mixing_rate) if isinstance(
        entry, str) else entry
    task = seqio.TaskRegistry.get(task_name)
    entries.append((_register_conditioned_task(mixture_name, task, task_id),
                    rate))
  return seqio.MixtureRegistry.add(mixture_name, entries,
                                   mixture_cls=mixtures.TaskIdMixture)
