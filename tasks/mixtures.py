"""Registration of tasks with baked-in ids, and mixtures with gin-set rates.

Rates are read when seqio samples the mixture, so one gin binding sets them
for whichever mixture a run uses:

    hyperprompt_jax.tasks.mixing_rate.temperature = 2.0   # temperature-scaled
    hyperprompt_jax.tasks.mixing_rate.maximum = 2**16     # examples-capped
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence

import gin
import seqio

from hyperprompt_jax.tasks import metrics
from hyperprompt_jax.tasks import task_ids
from hyperprompt_jax.tasks import vocabularies


@gin.configurable(module='hyperprompt_jax.tasks')
def mixing_rate(task: seqio.Task, temperature: float = 1.0,
                maximum: int | None = None) -> float:
  """min(train examples, maximum) ** (1 / temperature).

  The defaults give examples-proportional mixing. Example counts are the
  official split sizes the task's source declares, so this works offline.
  """
  return seqio.mixing_rate_num_examples(task, maximum=maximum,
                                        temperature=temperature)


class TaskIdMixture(seqio.Mixture):
  """A mixture whose examples keep their `task_id` feature.

  seqio's Mixture keeps only the output features (`inputs`, `targets`); the
  scalar `task_id` is not one (seqio's evaluator assumes output features are
  sequences), so it is passed through here, also when t5x's train binary
  calls `get_dataset` directly.
  """

  def get_dataset(self, *args, passthrough_features=None, **kwargs):
    passthrough_features = [*(passthrough_features or ()), 'task_id']
    return super().get_dataset(
        *args, passthrough_features=passthrough_features, **kwargs)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """Everything that makes one seqio task except its id (its mixture index).

  Attributes:
    name: registered task name.
    source: raw examples.
    preprocessors: text-to-text preprocessors, before tokenisation.
    postprocess_fn: decoded text -> what `metric_fns` score.
    metric_fns: seqio metric functions.
  """
  name: str
  source: seqio.DataSource
  preprocessors: Sequence[Callable]
  postprocess_fn: Callable
  metric_fns: Sequence[metrics.MetricFn]


def register_mixture(mixture_name: str, specs: Sequence[TaskSpec],
                     vocabulary: seqio.Vocabulary) -> None:
  """Registers each task with id = its index in `specs`, then the mixture."""
  for task_id, spec in enumerate(specs):
    seqio.TaskRegistry.add(
        spec.name,
        source=spec.source,
        preprocessors=[
            *spec.preprocessors,
            seqio.preprocessors.tokenize,
            seqio.CacheDatasetPlaceholder(),
            seqio.preprocessors.append_eos_after_trim,
            functools.partial(task_ids.add_task_id, task_id=task_id),
        ],
        output_features=vocabularies.output_features(vocabulary),
        postprocess_fn=spec.postprocess_fn,
        metric_fns=spec.metric_fns)
  seqio.MixtureRegistry.add(
      mixture_name, [(spec.name, mixing_rate) for spec in specs],
      mixture_cls=TaskIdMixture)
