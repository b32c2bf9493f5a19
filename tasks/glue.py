"""GLUE as T5-style text-to-text tasks `glue_<name>_v2` and `glue_mixture`.

Task ids follow the order of `GLUE_TASKS`. Data come from TFDS `glue/<name>`
or the official TSV files (see `sources.benchmark_source`).
"""

import functools
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from hyperprompt_jax.tasks import local_files
from hyperprompt_jax.tasks import metrics
from hyperprompt_jax.tasks import mixtures
from hyperprompt_jax.tasks import postprocessors
from hyperprompt_jax.tasks import preprocessors
from hyperprompt_jax.tasks import sources
from hyperprompt_jax.tasks import vocabularies

MIXTURE_NAME = 'glue_mixture'
TFDS_VERSION = '2.0.0'

_PAIR = {'sentence1': 'sentence1', 'sentence2': 'sentence2'}
_FILES = {'train': 'train.tsv', 'validation': 'dev.tsv', 'test': 'test.tsv'}
_MNLI_FILES = {'train': 'train.tsv', 'validation': 'dev_matched.tsv',
               'validation_mismatched': 'dev_mismatched.tsv',
               'test': 'test_matched.tsv',
               'test_mismatched': 'test_mismatched.tsv'}


class GlueDataset(NamedTuple):
  """One GLUE dataset.

  Attributes:
    folder: its folder in the official distribution.
    columns: how its TSV columns map onto the TFDS features.
    label_classes: TFDS's class names, in id order; None for regression.
    split_sizes: official number of examples per split.
    metric_fns: the leaderboard's metrics.
  """
  folder: str
  columns: local_files.GlueColumns
  label_classes: Sequence[str] | None
  split_sizes: Mapping[str, int]
  metric_fns: Sequence[metrics.MetricFn]


_Columns = local_files.GlueColumns
_BINARY = (metrics.f1, metrics.accuracy)

GLUE_TASKS = {
    'cola': GlueDataset(
        'CoLA',
        _Columns({'sentence': 'sentence'}, 'label',
                 headerless=('source', 'label', 'original_label', 'sentence')),
        ('unacceptable', 'acceptable'),
        {'train': 8551, 'validation': 1043, 'test': 1063},
        (metrics.matthews_corrcoef,)),
    'sst2': GlueDataset(
        'SST-2', _Columns({'sentence': 'sentence'}, 'label'),
        ('negative', 'positive'),
        {'train': 67349, 'validation': 872, 'test': 1821},
        (metrics.accuracy,)),
    'mrpc': GlueDataset(
        'MRPC',
        _Columns({'sentence1': '#1 String', 'sentence2': '#2 String'},
                 'Quality'),
        ('not_equivalent', 'equivalent'),
        {'train': 3668, 'validation': 408, 'test': 1725},
        _BINARY),
    'qqp': GlueDataset(
        'QQP',
        _Columns({'question1': 'question1', 'question2': 'question2'},
                 'is_duplicate'),
        ('not_duplicate', 'duplicate'),
        {'train': 363846, 'validation': 40430, 'test': 390965},
        _BINARY),
    'stsb': GlueDataset(
        'STS-B', _Columns(_PAIR, 'score'), None,
        {'train': 5749, 'validation': 1500, 'test': 1379},
        (metrics.pearson_spearman,)),
    'mnli': GlueDataset(
        'MNLI',
        _Columns({'hypothesis': 'sentence2', 'premise': 'sentence1'},
                 'gold_label'),
        ('entailment', 'neutral', 'contradiction'),
        {'train': 392702, 'validation': 9815, 'validation_mismatched': 9832,
         'test': 9796, 'test_mismatched': 9847},
        (metrics.accuracy,)),
    'qnli': GlueDataset(
        'QNLI', _Columns({'question': 'question', 'sentence': 'sentence'},
                         'label'),
        ('entailment', 'not_entailment'),
        {'train': 104743, 'validation': 5463, 'test': 5463},
        (metrics.accuracy,)),
    'rte': GlueDataset(
        'RTE', _Columns(_PAIR, 'label'), ('entailment', 'not_entailment'),
        {'train': 2490, 'validation': 277, 'test': 3000},
        (metrics.accuracy,)),
    'wnli': GlueDataset(
        'WNLI', _Columns(_PAIR, 'label'), ('not_entailment', 'entailment'),
        {'train': 635, 'validation': 71, 'test': 146},
        (metrics.accuracy,)),
}

# MNLI's matched sets are its `validation` and `test` splits.
_MNLI_TFDS_SPLITS = {'validation': 'validation_matched',
                     'test': 'test_matched'}


def task_name(name: str) -> str:
  """Registered name of GLUE dataset `name`, e.g. 'glue_cola_v2'."""
  return f'glue_{name}_v2'


def _task_spec(name: str) -> mixtures.TaskSpec:
  """The text-to-text task of GLUE dataset `name`."""
  folder, columns, label_classes, sizes, metric_fns = GLUE_TASKS[name]
  files = _MNLI_FILES if name == 'mnli' else _FILES
  if label_classes is None:
    preprocessor = preprocessors.stsb
    postprocess_fn = postprocessors.to_float
  else:
    preprocessor = functools.partial(
        preprocessors.text_to_text, benchmark_name=name,
        feature_names=sorted(columns.features), label_classes=label_classes)
    postprocess_fn = functools.partial(postprocessors.class_id,
                                       label_classes=label_classes)
  source = sources.BenchmarkDataSource(
      benchmark='glue', tfds_name=f'glue/{name}:{TFDS_VERSION}',
      split_sizes=sizes,
      local_files={split: f'{folder}/{files[split]}' for split in sizes},
      read_local=functools.partial(local_files.read_glue_tsv, columns=columns,
                                   label_classes=label_classes),
      tfds_splits=_MNLI_TFDS_SPLITS if name == 'mnli' else None)
  return mixtures.TaskSpec(task_name(name), source, [preprocessor],
                           postprocess_fn, metric_fns)


def register() -> None:
  """Registers every GLUE task and `glue_mixture` (ids in GLUE_TASKS order)."""
  mixtures.register_mixture(
      MIXTURE_NAME, [_task_spec(name) for name in GLUE_TASKS],
      vocabularies.DeferredVocabulary())
