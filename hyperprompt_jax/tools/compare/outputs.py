"""The comparison's outputs: one row per setting over its seeds, printed and
written to OUTPUT_DIR/comparison.{md,json,png}."""

import dataclasses
import json
import os
from typing import Any, Optional, Sequence

import gin
import matplotlib
matplotlib.use('Agg')  # files only, no display
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from hyperprompt_jax.conditioning import param_counts as counts_lib
from hyperprompt_jax import gin_utils
from hyperprompt_jax.model import network
from hyperprompt_jax import tables
from hyperprompt_jax.tools.compare import runs
from hyperprompt_jax.tools.compare import sweep

OUTPUT_NAME = 'comparison'
# The trainer adds these to every task's metrics; a task's score is the mean
# of its own (decoded) metrics, as GLUE averages MRPC's F1 and accuracy.
TEACHER_FORCED_METRICS = ('loss', 'token_accuracy')


@dataclasses.dataclass(frozen=True)
class ParamCounts:
  """Task-conditioning parameters of a setting and of its backbone."""
  added: int
  backbone: int

  @property
  def percent(self) -> float:
    return 100.0 * self.added / self.backbone


def param_counts(config: sweep.CompareConfig, setting: sweep.Setting
                 ) -> ParamCounts:
  """Closed-form counts (`param_counts.py`) of the network the run files make.

  Parsing the gin files here also rejects a bad configuration before any
  training starts.
  """
  gin.clear_config()
  gin_utils.parse_gin(*config.gin_args(sweep.Run(setting, 0)),
                      config.gin_search_paths)
  module = gin.get_configurable(network.Transformer)()
  gin.clear_config()
  return ParamCounts(
      added=counts_lib.conditioning_param_count(module.hyperprompt,
                                                module.config),
      backbone=counts_lib.backbone_param_count(module.config))


def task_scores(results: dict[str, dict[str, float]]) -> dict[str, float]:
  """{task: mean of its own metrics} (teacher-forced loss/accuracy left out)."""
  return {task: float(np.mean([v for k, v in metrics.items()
                               if k not in TEACHER_FORCED_METRICS]))
          for task, metrics in results.items()}


def mean_std(values: Sequence[float]) -> dict[str, Optional[float]]:
  """{'mean', 'std'}: the sample standard deviation, None for one value."""
  return {'mean': float(np.mean(values)),
          'std': float(np.std(values, ddof=1)) if len(values) > 1 else None}


def summarize(setting: sweep.Setting, counts: ParamCounts,
              results: Sequence[runs.RunResult]) -> dict[str, Any]:
  """One table row: the setting's finished runs over seeds."""
  scores = [task_scores(r.results) for r in results]
  tasks = sorted(scores[0])
  times = [r.step_time_seconds for r in results
           if r.step_time_seconds is not None]
  return {
      'name': setting.name,
      'setting': dataclasses.asdict(setting),
      'runs': [r.run.name for r in results],
      'added_params': counts.added,
      'backbone_params': counts.backbone,
      'added_percent': counts.percent,
      'step_time_seconds': mean_std(times) if times else None,
      'tasks': {t: mean_std([s[t] for s in scores]) for t in tasks},
      'average': mean_std([float(np.mean(list(s.values()))) for s in scores]),
      'metrics': {t: {m: mean_std([r.results[t][m] for r in results])
                      for m in results[0].results[t]} for t in tasks},
  }


def _short_names(tasks: Sequence[str]) -> dict[str, str]:
  """Task names without their common prefix (`synthetic_prefixed_`)."""
  prefix = os.path.commonprefix(list(tasks)) if len(tasks) > 1 else ''
  prefix = prefix[:prefix.rfind('_') + 1]
  return {t: t[len(prefix):] for t in tasks}


def _cell(stats: Optional[dict[str, Optional[float]]], scale: float = 1.0,
          digits: int = 1) -> str:
  if stats is None:
    return '-'
  mean = f'{stats["mean"] * scale:.{digits}f}'
  if stats['std'] is None:
    return mean
  return f'{mean} ± {stats["std"] * scale:.{digits}f}'


def ablation_columns(config: sweep.CompareConfig) -> list[tuple[str, str]]:
  """(header, Setting field) of each ablation the command varies."""
  columns = []
  if config.tunes != ('all',):
    columns.append(('tune', 'tune'))
  if config.prompt_lengths != (None,):
    columns.append(('prompt length', 'prompt_length'))
  if config.conditions != ('both',):
    columns.append(('conditioned', 'condition'))
  return columns


def markdown_table(config: sweep.CompareConfig, rows: Sequence[dict]) -> str:
  """The comparison as a markdown table, one row per setting."""
  tasks = sorted({t for row in rows for t in row['tasks']})
  short = _short_names(tasks)
  ablations = ablation_columns(config)
  header = (['variant'] + [h for h, _ in ablations] +
            [short[t] for t in tasks] +
            ['average', 'added params', '% of backbone', 'step ms'])
  cells = []
  for row in rows:
    setting = row['setting']
    cells.append([setting['variant']] +
                 ['-' if setting[f] is None else str(setting[f])
                  for _, f in ablations] +
                 [_cell(row['tasks'].get(t)) for t in tasks] +
                 [_cell(row['average']), f'{row["added_params"]:,}',
                  f'{row["added_percent"]:.2f}',
                  _cell(row['step_time_seconds'], 1e3)])
  return tables.markdown_table(header, cells)


def write_chart(rows: Sequence[dict], title: str, path: str) -> None:
  """Grouped bars: per task and the average, one bar per setting, std bars."""
  tasks = sorted({t for row in rows for t in row['tasks']})
  groups = [*_short_names(tasks).values(), 'average']
  width = 0.8 / len(rows)
  figure, axes = plt.subplots(figsize=(max(8.0, 1.2 * len(groups) + 0.15 *
                                           len(groups) * len(rows)), 4.5))
  for i, row in enumerate(rows):
    stats = [row['tasks'].get(t) for t in tasks] + [row['average']]
    means = [s['mean'] if s else np.nan for s in stats]
    stds = [(s['std'] or 0.0) if s else 0.0 for s in stats]
    axes.bar(np.arange(len(groups)) + (i - (len(rows) - 1) / 2) * width,
             means, width, yerr=stds, capsize=2, label=row['name'])
  axes.set_xticks(np.arange(len(groups)), groups, rotation=20, ha='right')
  axes.set_ylabel('score (mean of the task\'s metrics)')
  axes.set_title(title)
  axes.legend(fontsize='small', loc='upper left', bbox_to_anchor=(1, 1))
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def write_outputs(config: sweep.CompareConfig, rows: Sequence[dict],
                  results: Sequence[runs.RunResult],
                  failed: Sequence[str]) -> str:
  """Writes OUTPUT_DIR/comparison.{md,json,png}; returns the table."""
  table = markdown_table(config, rows)
  base = os.path.join(config.output_dir, OUTPUT_NAME)
  title = (f'{config.mixture}, {config.steps} steps, seeds '
           f'{", ".join(map(str, range(config.seeds)))}')
  with open(base + '.md', 'w') as f:
    f.write(f'{title}: scores per task (mean of its metrics) and their '
            'average, mean ± sample std over seeds; median train-step '
            'time.\n\n' + table + '\n')
  with open(base + '.json', 'w') as f:
    json.dump({
        'mixture': config.mixture,
        'steps': config.steps,
        'seeds': config.seeds,
        'gin_files': list(config.gin_files),
        'gin_bindings': list(config.gin_bindings),
        'rows': list(rows),
        'runs': [{'name': r.run.name, 'seed': r.run.seed,
                  'setting': dataclasses.asdict(r.run.setting),
                  'results': r.results,
                  'step_time_seconds': r.step_time_seconds} for r in results],
        'failed': list(failed),
    }, f, indent=2)
  write_chart(rows, title, base + '.png')
  return table

