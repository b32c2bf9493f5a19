r"""Task-conditioning variants side by side: this project's Table 1.

  python -m hyperprompt_jax.compare [--variants=none,global,...] [--seeds=3]
    [--mixture=synthetic_prefixed_mixture] [--steps=500]
    [--output_dir=/tmp/hyperprompt_jax/compare]
    [--tune=all,conditioning] [--prompt_lengths=4,16] [--condition=both,encoder]
    [--gin_file=...] [--gin.KEY=VALUE ...] [--gin_search_paths=...]

Every variant x ablation value x seed is one run of the standalone trainer,
`python -m hyperprompt_jax.train` with the `--gin_file`s (default
runs/synthetic_tiny_base.gin), then gin/variants/<variant>.gin, then the
`--gin.KEY=VALUE` bindings and the run's own MODEL_DIR, RANDOM_SEED,
MIXTURE_OR_TASK_NAME, TRAIN_STEPS and ablation macros, one run at a time.
Each run lives in OUTPUT_DIR/<run name>/ (its MODEL_DIR, with its output in
compare.log); the trainer evaluates it per task at the end. Then the table
(per task and averaged, mean +- sample std over seeds; added parameters and
their percent of the backbone; median train-step time) is printed and
written to OUTPUT_DIR/comparison.{md,json,png}.

Running the same command again resumes: a run whose eval_results.json is at
the final step is not retrained, an unfinished one continues from its latest
checkpoint. A run that fails is reported in one line and the others go on.
"""

import dataclasses
import glob
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Optional, Sequence

import gin
import matplotlib
matplotlib.use('Agg')  # files only, no display
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
import tensorflow as tf

from hyperprompt_jax.conditioning import hyperprompt_config as hp_config
from hyperprompt_jax.conditioning import param_counts as counts_lib
from hyperprompt_jax import gin_utils
from hyperprompt_jax.model import network
from hyperprompt_jax.training import preemption
from hyperprompt_jax.training import trainer as trainer_lib

DEFAULT_OUTPUT_DIR = '/tmp/hyperprompt_jax/compare'
DEFAULT_MIXTURE = 'synthetic_prefixed_mixture'
DEFAULT_GIN_FILES = ('runs/synthetic_tiny_base.gin',)
# All variants x 3 seeds fit a 2-core CPU machine (README gives the time).
DEFAULT_STEPS = 500
DEFAULT_SEEDS = 3
CONDITIONS = ('both', 'encoder')
RESULTS_FILE = 'eval_results.json'
LOG_FILE = 'compare.log'
CACHE_DIR = 'jax_cache'
OUTPUT_NAME = 'comparison'
# The trainer adds these to every task's metrics; a task's score is the mean
# of its own (decoded) metrics, as GLUE averages MRPC's F1 and accuracy.
TEACHER_FORCED_METRICS = ('loss', 'token_accuracy')
# Macros that each run sets from compare's own flags.
RUN_MACROS = {'MODEL_DIR': '--output_dir', 'RANDOM_SEED': '--seeds',
              'MIXTURE_OR_TASK_NAME': '--mixture', 'TRAIN_STEPS': '--steps',
              'TUNE': '--tune', 'PROMPT_LENGTH': '--prompt_lengths',
              'CONDITION_DECODER': '--condition'}
# Variants each ablation changes; the others run once, at the default value.
PROMPT_LENGTH_VARIANTS = (*hp_config.LAYER_PROMPT_VARIANTS, 'prompt_tuning')
CONDITION_VARIANTS = (*hp_config.LAYER_PROMPT_VARIANTS,
                      *hp_config.ADAPTER_VARIANTS)


@dataclasses.dataclass(frozen=True)
class Setting:
  """One row of the table: a variant and its ablation values.

  Attributes:
    variant: one of `hyperprompt_config.VARIANTS`.
    tune: 'all', or 'conditioning' (frozen backbone).
    prompt_length: PROMPT_LENGTH, or None for the gin files' value (and for
      variants without prompts).
    condition: 'both' stacks or the 'encoder' only (CONDITION_DECODER=False);
      None for variants without per-stack conditioning.
  """
  variant: str
  tune: str = 'all'
  prompt_length: Optional[int] = None
  condition: Optional[str] = 'both'

  @property
  def name(self) -> str:
    """e.g. `global`, `global-frozen-l4-encoder`."""
    parts = [self.variant]
    if self.tune == 'conditioning':
      parts.append('frozen')
    if self.prompt_length is not None:
      parts.append(f'l{self.prompt_length}')
    if self.condition == 'encoder':
      parts.append('encoder')
    return '-'.join(parts)

  def bindings(self) -> list[str]:
    """gin bindings of the ablation values that differ from the gin files."""
    out = []
    if self.tune != 'all':
      out.append(f"TUNE = '{self.tune}'")
    if self.prompt_length is not None:
      out.append(f'PROMPT_LENGTH = {self.prompt_length}')
    if self.condition == 'encoder':
      out.append('CONDITION_DECODER = False')
    return out


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run: a setting and a seed."""
  setting: Setting
  seed: int

  @property
  def name(self) -> str:
    return f'{self.setting.name}-seed{self.seed}'


@dataclasses.dataclass(frozen=True)
class CompareConfig:
  """What to compare, with what budget, and where.

  Attributes:
    variants: variants in table order.
    seeds: number of seeds (RANDOM_SEED 0..seeds-1).
    mixture: MIXTURE_OR_TASK_NAME of every run.
    steps: TRAIN_STEPS of every run.
    output_dir: parent of the runs' MODEL_DIRs and of the outputs.
    tunes: TUNE values (`trainer.TUNE_MODES`).
    prompt_lengths: PROMPT_LENGTH values; (None,) keeps the gin files'.
    conditions: `CONDITIONS` values.
    gin_files: the trainer's --gin_file flags before the variant's file.
    gin_bindings: the trainer's bindings, e.g. 'BATCH_SIZE = 16'.
    gin_search_paths: the trainer's --gin_search_paths.
  """
  variants: tuple[str, ...] = hp_config.VARIANTS
  seeds: int = DEFAULT_SEEDS
  mixture: str = DEFAULT_MIXTURE
  steps: int = DEFAULT_STEPS
  output_dir: str = DEFAULT_OUTPUT_DIR
  tunes: tuple[str, ...] = ('all',)
  prompt_lengths: tuple[Optional[int], ...] = (None,)
  conditions: tuple[str, ...] = ('both',)
  gin_files: tuple[str, ...] = DEFAULT_GIN_FILES
  gin_bindings: tuple[str, ...] = ()
  gin_search_paths: tuple[str, ...] = ()

  def settings(self) -> list[Setting]:
    """Every variant x ablation value, each ablation only where it applies.

    `none` always tunes everything (it has nothing else to tune).
    """
    out = []
    for variant, tune, length, condition in itertools.product(
        self.variants, self.tunes, self.prompt_lengths, self.conditions):
      setting = Setting(
          variant, tune if variant != 'none' else 'all',
          length if variant in PROMPT_LENGTH_VARIANTS else None,
          condition if variant in CONDITION_VARIANTS else None)
      if setting not in out:
        out.append(setting)
    return out

  def runs(self) -> list[Run]:
    return [Run(s, seed) for s in self.settings() for seed in range(self.seeds)]

  def model_dir(self, run: Run) -> str:
    return os.path.join(self.output_dir, run.name)

  def gin_args(self, run: Run) -> tuple[list[str], list[str]]:
    """The run's (gin files, gin bindings), in the order the trainer reads.

    The variant's file comes after the `--gin_file`s, so a file that sets the
    model (or a test's tiny one) cannot override the variant.
    """
    files = [*self.gin_files, f'variants/{run.setting.variant}.gin']
    bindings = [*self.gin_bindings,
                f"MODEL_DIR = '{self.model_dir(run)}'",
                f'RANDOM_SEED = {run.seed}',
                f"MIXTURE_OR_TASK_NAME = '{self.mixture}'",
                f'TRAIN_STEPS = {self.steps}', *run.setting.bindings()]
    return files, bindings

  def train_command(self, run: Run) -> list[str]:
    """`python -m hyperprompt_jax.train ...` of one run."""
    files, bindings = self.gin_args(run)
    search = ([f'--gin_search_paths={",".join(self.gin_search_paths)}']
              if self.gin_search_paths else [])
    return [sys.executable, '-m', 'hyperprompt_jax.train', *search,
            *[f'--gin_file={f}' for f in files],
            *[f'--gin_bindings={b}' for b in bindings]]


@dataclasses.dataclass(frozen=True)
class ParamCounts:
  """Task-conditioning parameters of a setting and of its backbone."""
  added: int
  backbone: int

  @property
  def percent(self) -> float:
    return 100.0 * self.added / self.backbone


@dataclasses.dataclass(frozen=True)
class RunResult:
  """A finished run: per-task metrics and its median train-step time."""
  run: Run
  results: dict[str, dict[str, float]]
  step_time_seconds: Optional[float]


def param_counts(config: CompareConfig, setting: Setting) -> ParamCounts:
  """Closed-form counts (`param_counts.py`) of the network the run files make.

  Parsing the gin files here also rejects a bad configuration before any
  training starts.
  """
  gin.clear_config()
  gin_utils.parse_gin(*config.gin_args(Run(setting, 0)),
                      config.gin_search_paths)
  module = gin.get_configurable(network.Transformer)()
  gin.clear_config()
  return ParamCounts(
      added=counts_lib.conditioning_param_count(module.hyperprompt,
                                                module.config),
      backbone=counts_lib.backbone_param_count(module.config))


def finished_results(model_dir: str, steps: int
                     ) -> Optional[dict[str, dict[str, float]]]:
  """{task: {metric: value}} of MODEL_DIR/eval_results.json if it is at
  `steps`, else None."""
  path = os.path.join(model_dir, RESULTS_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    saved = json.load(f)
  return saved['results'] if saved['step'] == steps else None


def logged_windows(model_dir: str, tag: str) -> list[float]:
  """A run's logged `tag` values, each trainer session's first left out.

  Each TensorBoard events file under MODEL_DIR/train is one session of the
  trainer (a resumed run adds one); its first window includes compilation.
  """
  windows = []
  for path in sorted(glob.glob(os.path.join(model_dir, 'train', '*tfevents*'))):
    values = [float(tf.make_ndarray(v.tensor)) if v.HasField('tensor')
              else v.simple_value
              for event in tf.compat.v1.train.summary_iterator(path)
              for v in event.summary.value if v.tag == tag]
    windows += values[1:]
  return windows


def step_time_seconds(model_dir: str) -> Optional[float]:
  """Median of the run's logged `step_time_seconds` windows, compile excluded."""
  windows = logged_windows(model_dir, 'step_time_seconds')
  return float(np.median(windows)) if windows else None


def _train(command: list[str], log_path: str, cache_dir: str) -> int:
  """Runs the trainer with its output appended to `log_path`; its exit code.

  Unless the environment names one, runs share the JAX compilation cache
  `cache_dir`: the seeds of a setting compile the same functions. A SIGTERM
  to this process is passed on, so the run saves and exits with
  `preemption.EXIT_CODE` even when only this process is signalled.
  """
  with open(log_path, 'a') as log:
    log.write(f'$ {shlex.join(command)}\n')
    log.flush()
    env = dict(os.environ)
    env.setdefault('JAX_COMPILATION_CACHE_DIR', cache_dir)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env=env)
    previous = signal.signal(
        signal.SIGTERM, lambda *_: process.send_signal(signal.SIGTERM))
    try:
      return process.wait()
    finally:
      signal.signal(signal.SIGTERM, previous)


def _failure(log_path: str) -> str:
  """The log's `error: ...` line, else its last line."""
  with open(log_path) as f:
    lines = [l.strip() for l in f if l.strip()]
  errors = [l for l in lines if l.startswith('error: ')]
  return (errors or lines or ['(no output)'])[-1]


def _train_run(config: CompareConfig, run: Run, label: str
               ) -> Optional[dict[str, dict[str, float]]]:
  """Trains `run` (continuing it if started) and evaluates it.

  Returns:
    Its per-task results, or None (said in one line) if it failed.

  Raises:
    preemption.Preempted: the run was preempted (saved); run again.
  """
  model_dir = config.model_dir(run)
  os.makedirs(model_dir, exist_ok=True)
  log_path = os.path.join(model_dir, LOG_FILE)
  print(f'{label} {run.name}: training to step {config.steps} '
        f'(log: {log_path})', flush=True)
  start = time.time()
  code = _train(config.train_command(run), log_path,
                os.path.join(config.output_dir, CACHE_DIR))
  if code == preemption.EXIT_CODE:
    raise preemption.Preempted(
        f'{run.name} was preempted (saved in {model_dir}); run the same '
        f'compare command again to continue (exit code {code})')
  results = finished_results(model_dir, config.steps) if code == 0 else None
  if results is None:
    reason = (f'exit code {code}: {_failure(log_path)}' if code else
              f'its {RESULTS_FILE} is not at step {config.steps}')
    print(f'{label} {run.name} failed ({reason}); log: {log_path}',
          flush=True)
  else:
    print(f'{label} {run.name}: done in {time.time() - start:.0f} s',
          flush=True)
  return results


def run_one(config: CompareConfig, run: Run, label: str) -> Optional[RunResult]:
  """`run`'s results, trained unless it is finished; None if it failed."""
  model_dir = config.model_dir(run)
  results = finished_results(model_dir, config.steps)
  if results is not None:
    print(f'{label} {run.name}: finished at step {config.steps}, not '
          'retrained', flush=True)
  else:
    results = _train_run(config, run, label)
  if results is None:
    return None
  return RunResult(run, results, step_time_seconds(model_dir))


def task_scores(results: dict[str, dict[str, float]]) -> dict[str, float]:
  """{task: mean of its own metrics} (teacher-forced loss/accuracy left out)."""
  return {task: float(np.mean([v for k, v in metrics.items()
                               if k not in TEACHER_FORCED_METRICS]))
          for task, metrics in results.items()}


def mean_std(values: Sequence[float]) -> dict[str, Optional[float]]:
  """{'mean', 'std'}: the sample standard deviation, None for one value."""
  return {'mean': float(np.mean(values)),
          'std': float(np.std(values, ddof=1)) if len(values) > 1 else None}


def summarize(setting: Setting, counts: ParamCounts,
              results: Sequence[RunResult]) -> dict[str, Any]:
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


def ablation_columns(config: CompareConfig) -> list[tuple[str, str]]:
  """(header, Setting field) of each ablation the command varies."""
  columns = []
  if config.tunes != ('all',):
    columns.append(('tune', 'tune'))
  if config.prompt_lengths != (None,):
    columns.append(('prompt length', 'prompt_length'))
  if config.conditions != ('both',):
    columns.append(('conditioned', 'condition'))
  return columns


def markdown_table(config: CompareConfig, rows: Sequence[dict]) -> str:
  """The comparison as a markdown table, one row per setting."""
  tasks = sorted({t for row in rows for t in row['tasks']})
  short = _short_names(tasks)
  ablations = ablation_columns(config)
  header = (['variant'] + [h for h, _ in ablations] +
            [short[t] for t in tasks] +
            ['average', 'added params', '% of backbone', 'step ms'])
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
  for row in rows:
    setting = row['setting']
    cells = ([setting['variant']] +
             ['-' if setting[f] is None else str(setting[f])
              for _, f in ablations] +
             [_cell(row['tasks'].get(t)) for t in tasks] +
             [_cell(row['average']), f'{row["added_params"]:,}',
              f'{row["added_percent"]:.2f}',
              _cell(row['step_time_seconds'], 1e3)])
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


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


def write_outputs(config: CompareConfig, rows: Sequence[dict],
                  results: Sequence[RunResult], failed: Sequence[str]) -> str:
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


def compare(config: CompareConfig) -> tuple[str, list[str]]:
  """Trains what is not finished, then writes the outputs.

  Returns:
    The markdown table and the names of the runs that failed.
  """
  settings = config.settings()
  counts = {s: param_counts(config, s) for s in settings}
  runs = config.runs()
  results, failed = [], []
  for i, run in enumerate(runs):
    result = run_one(config, run, f'[{i + 1}/{len(runs)}]')
    if result is None:
      failed.append(run.name)
    else:
      results.append(result)
  rows = []
  for setting in settings:
    finished = [r for r in results if r.run.setting == setting]
    if finished:
      rows.append(summarize(setting, counts[setting], finished))
  table = write_outputs(config, rows, results, failed) if rows else ''
  return table, failed


def _values(flag: str, text: str, allowed: Sequence[str]) -> tuple[str, ...]:
  """Comma-separated flag values; ValueError (one line) if one is bad."""
  values = tuple(v.strip() for v in text.split(',') if v.strip())
  if not values or not set(values) <= set(allowed):
    raise ValueError(f'bad {flag}={text!r}: give comma-separated values from '
                     f'{", ".join(allowed)}')
  return values


def _lengths(text: str) -> tuple[int, ...]:
  """--prompt_lengths values; ValueError (one line) if one is bad."""
  try:
    lengths = tuple(int(v) for v in text.split(',') if v.strip())
  except ValueError:
    lengths = ()
  if not lengths or min(lengths) < 1:
    raise ValueError(f'bad --prompt_lengths={text!r}: give comma-separated '
                     'positive integers, e.g. --prompt_lengths=4,16')
  return lengths


def _check_bindings(bindings: Sequence[str]) -> None:
  """Rejects --gin bindings of the macros compare sets per run."""
  for binding in bindings:
    name = binding.partition('=')[0].strip()
    if name in RUN_MACROS:
      raise ValueError(f'--gin.{name} is set per run by compare: use '
                       f'{RUN_MACROS[name]} instead')


def parse_args(argv: Sequence[str]) -> CompareConfig:
  """Command-line flags -> `CompareConfig`; ValueError for bad input."""
  parser = gin_utils.command_parser('compare', __doc__)
  parser.add_argument('--variants', default=','.join(hp_config.VARIANTS),
                      help='comma-separated variants, in table order')
  parser.add_argument('--seeds', type=int, default=DEFAULT_SEEDS,
                      help='seeds per setting (RANDOM_SEED 0..N-1)')
  parser.add_argument('--mixture', default=DEFAULT_MIXTURE,
                      help='MIXTURE_OR_TASK_NAME of every run')
  parser.add_argument('--steps', type=int, default=DEFAULT_STEPS,
                      help='TRAIN_STEPS of every run')
  parser.add_argument('--output_dir', default=DEFAULT_OUTPUT_DIR,
                      help='runs in OUTPUT_DIR/<run name>/, outputs in '
                      'OUTPUT_DIR/comparison.{md,json,png}')
  parser.add_argument('--tune', default='all',
                      help='comma-separated TUNE values: all, conditioning '
                      '(frozen backbone)')
  parser.add_argument('--prompt_lengths', default='',
                      help='comma-separated PROMPT_LENGTH values (default: '
                      "the gin files')")
  parser.add_argument('--condition', default='both',
                      help='comma-separated: both (stacks), encoder '
                      '(CONDITION_DECODER=False)')
  gin_utils.add_gin_flags(
      parser, 'gin file of every run, before the variant file (repeatable; '
      f'default {", ".join(DEFAULT_GIN_FILES)})', of_every_run=' of every run')
  args = parser.parse_args(gin_utils.rewrite_gin_args(argv))
  _check_bindings(args.gin_bindings)
  if args.seeds < 1 or args.steps < 1:
    raise ValueError(f'bad --seeds={args.seeds} or --steps={args.steps}: '
                     'both must be at least 1')
  return CompareConfig(
      variants=_values('--variants', args.variants, hp_config.VARIANTS),
      seeds=args.seeds, mixture=args.mixture, steps=args.steps,
      output_dir=os.path.abspath(args.output_dir),
      tunes=_values('--tune', args.tune, trainer_lib.TUNE_MODES),
      prompt_lengths=(_lengths(args.prompt_lengths) if args.prompt_lengths
                      else (None,)),
      conditions=_values('--condition', args.condition, CONDITIONS),
      gin_files=tuple(args.gin_file or DEFAULT_GIN_FILES),
      gin_bindings=tuple(args.gin_bindings),
      gin_search_paths=tuple(p for p in args.gin_search_paths.split(',') if p))


def main(argv: Sequence[str]) -> None:
  config = parse_args(argv)
  table, failed = compare(config)
  if table:
    print(table)
    print(f'wrote {os.path.join(config.output_dir, OUTPUT_NAME)}'
          '.{md,json,png}')
  if failed:
    sys.exit(f'error: {len(failed)} of {len(config.runs())} runs failed '
             f'({", ".join(failed)}); see their {LOG_FILE}, fix, and run the '
             'same command again')


if __name__ == '__main__':
  gin_utils.run_main(main)
