"""SuperGLUE as T5-style text-to-text tasks `super_glue_<name>_v102`.

Task ids follow the order of `SUPER_GLUE_TASKS` in `super_glue_mixture`. Data
come from TFDS `super_glue/<name>` (WSC: `wsc.fixed`) or the official JSONL
files (see `sources.benchmark_source`).
"""

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from hyperprompt_jax.tasks import local_files
from hyperprompt_jax.tasks import metrics
from hyperprompt_jax.tasks import mixtures
from hyperprompt_jax.tasks import postprocessors
from hyperprompt_jax.tasks import preprocessors
from hyperprompt_jax.tasks import sources
from hyperprompt_jax.tasks import vocabularies

MIXTURE_NAME = 'super_glue_mixture'
TFDS_VERSION = '1.0.2'

_FILES = {'train': 'train.jsonl', 'validation': 'val.jsonl',
          'test': 'test.jsonl'}
_BOOLEAN = ('False', 'True')
_ENTAILMENT = ('entailment', 'not_entailment')


class SuperGlueDataset(NamedTuple):
  """One SuperGLUE dataset.

  Attributes:
    folder: its folder in the official distribution.
    tfds_config: its TFDS config name.
    to_examples: one JSONL row -> TFDS-shaped examples.
    preprocessor: TFDS-shaped examples -> {'inputs', 'targets', ...} text.
    postprocess_fn: decoded text -> what `metric_fns` score.
    split_sizes: official number of TFDS examples per split.
    metric_fns: the leaderboard's metrics.
  """
  folder: str
  tfds_config: str
  to_examples: Callable[[dict], list[local_files.Example]]
  preprocessor: Callable
  postprocess_fn: Callable
  split_sizes: Mapping[str, int]
  metric_fns: Sequence[metrics.MetricFn]


def _classification(name: str, folder: str, feature_names: Sequence[str],
                    label_classes: Sequence[str],
                    split_sizes: Mapping[str, int],
                    metric_fns=(metrics.accuracy,)) -> SuperGlueDataset:
  """A dataset whose JSONL fields are its TFDS features, in T5's format."""
  return SuperGlueDataset(
      folder, name, local_files.flat_row(label_classes),
      functools.partial(preprocessors.text_to_text, benchmark_name=name,
                        feature_names=feature_names,
                        label_classes=label_classes),
      functools.partial(postprocessors.class_id, label_classes=label_classes),
      split_sizes, metric_fns)


SUPER_GLUE_TASKS = {
    'boolq': _classification(
        'boolq', 'BoolQ', ('passage', 'question'), _BOOLEAN,
        {'train': 9427, 'validation': 3270, 'test': 3245}),
    'cb': _classification(
        'cb', 'CB', ('hypothesis', 'premise'),
        ('entailment', 'contradiction', 'neutral'),
        {'train': 250, 'validation': 56, 'test': 250},
        (metrics.accuracy, metrics.macro_f1(num_classes=3))),
    'copa': _classification(
        'copa', 'COPA', ('choice1', 'choice2', 'premise', 'question'),
        ('choice1', 'choice2'),
        {'train': 400, 'validation': 100, 'test': 500}),
    'multirc': SuperGlueDataset(
        'MultiRC', 'multirc', local_files.multirc_row, preprocessors.multirc,
        postprocessors.multirc,
        {'train': 27243, 'validation': 4848, 'test': 9693},
        (metrics.multirc,)),
    'record': SuperGlueDataset(
        'ReCoRD', 'record', local_files.record_row, preprocessors.record,
        postprocessors.record,
        {'train': 100730, 'validation': 10000, 'test': 10000},
        (metrics.record,)),
    'rte': _classification(
        'rte', 'RTE', ('hypothesis', 'premise'), _ENTAILMENT,
        {'train': 2490, 'validation': 277, 'test': 3000}),
    # T5 ignores WiC's word offsets.
    'wic': _classification(
        'wic', 'WiC', ('sentence1', 'sentence2', 'word'), _BOOLEAN,
        {'train': 5428, 'validation': 638, 'test': 1400}),
    'wsc': SuperGlueDataset(
        'WSC', 'wsc.fixed', local_files.wsc_row, preprocessors.wsc,
        functools.partial(postprocessors.class_id, label_classes=_BOOLEAN),
        {'train': 554, 'validation': 104, 'test': 146},
        (metrics.accuracy,)),
}


def task_name(name: str) -> str:
  """Registered name of SuperGLUE dataset `name`, e.g. 'super_glue_cb_v102'."""
  return f'super_glue_{name}_v102'


def _task_spec(name: str) -> mixtures.TaskSpec:
  """The text-to-text task of SuperGLUE dataset `name`."""
  dataset = SUPER_GLUE_TASKS[name]
  source = sources.BenchmarkDataSource(
      benchmark='super_glue',
      tfds_name=f'super_glue/{dataset.tfds_config}:{TFDS_VERSION}',
      split_sizes=dataset.split_sizes,
      local_files={split: f'{dataset.folder}/{_FILES[split]}'
                   for split in dataset.split_sizes},
      read_local=functools.partial(local_files.read_jsonl,
                                   to_examples=dataset.to_examples))
  return mixtures.TaskSpec(task_name(name), source, [dataset.preprocessor],
                           dataset.postprocess_fn, dataset.metric_fns)


def register() -> None:
  """Registers every SuperGLUE task and `super_glue_mixture`."""
  mixtures.register_mixture(
      MIXTURE_NAME, [_task_spec(name) for name in SUPER_GLUE_TASKS],
      vocabularies.DeferredVocabulary())
