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

import os
import sys
from typing import Sequence

from hyperprompt_jax.conditioning import hyperprompt_config as hp_config
from hyperprompt_jax import gin_utils
from hyperprompt_jax.tools.compare import outputs
from hyperprompt_jax.tools.compare import runs as runs_lib
from hyperprompt_jax.tools.compare import sweep
from hyperprompt_jax.training import trainer as trainer_lib

# Macros that each run sets from compare's own flags.
RUN_MACROS = {'MODEL_DIR': '--output_dir', 'RANDOM_SEED': '--seeds',
              'MIXTURE_OR_TASK_NAME': '--mixture', 'TRAIN_STEPS': '--steps',
              'TUNE': '--tune', 'PROMPT_LENGTH': '--prompt_lengths',
              'CONDITION_DECODER': '--condition'}


def compare(config: sweep.CompareConfig) -> tuple[str, list[str]]:
  """Trains what is not finished, then writes the outputs.

  Returns:
    The markdown table and the names of the runs that failed.
  """
  settings = config.settings()
  counts = {s: outputs.param_counts(config, s) for s in settings}
  runs = config.runs()
  results, failed = [], []
  for i, run in enumerate(runs):
    result = runs_lib.run_one(config, run, f'[{i + 1}/{len(runs)}]')
    if result is None:
      failed.append(run.name)
    else:
      results.append(result)
  rows = []
  for setting in settings:
    finished = [r for r in results if r.run.setting == setting]
    if finished:
      rows.append(outputs.summarize(setting, counts[setting], finished))
  table = (outputs.write_outputs(config, rows, results, failed) if rows
           else '')
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


def parse_args(argv: Sequence[str]) -> sweep.CompareConfig:
  """Command-line flags -> `CompareConfig`; ValueError for bad input."""
  parser = gin_utils.command_parser('compare', __doc__)
  parser.add_argument('--variants', default=','.join(hp_config.VARIANTS),
                      help='comma-separated variants, in table order')
  parser.add_argument('--seeds', type=int, default=sweep.DEFAULT_SEEDS,
                      help='seeds per setting (RANDOM_SEED 0..N-1)')
  parser.add_argument('--mixture', default=sweep.DEFAULT_MIXTURE,
                      help='MIXTURE_OR_TASK_NAME of every run')
  parser.add_argument('--steps', type=int, default=sweep.DEFAULT_STEPS,
                      help='TRAIN_STEPS of every run')
  parser.add_argument('--output_dir', default=sweep.DEFAULT_OUTPUT_DIR,
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
      f'default {", ".join(sweep.DEFAULT_GIN_FILES)})',
      of_every_run=' of every run')
  args = parser.parse_args(gin_utils.rewrite_gin_args(argv))
  _check_bindings(args.gin_bindings)
  if args.seeds < 1 or args.steps < 1:
    raise ValueError(f'bad --seeds={args.seeds} or --steps={args.steps}: '
                     'both must be at least 1')
  return sweep.CompareConfig(
      variants=_values('--variants', args.variants, hp_config.VARIANTS),
      seeds=args.seeds, mixture=args.mixture, steps=args.steps,
      output_dir=os.path.abspath(args.output_dir),
      tunes=_values('--tune', args.tune, trainer_lib.TUNE_MODES),
      prompt_lengths=(_lengths(args.prompt_lengths) if args.prompt_lengths
                      else (None,)),
      conditions=_values('--condition', args.condition, sweep.CONDITIONS),
      gin_files=tuple(args.gin_file or sweep.DEFAULT_GIN_FILES),
      gin_bindings=tuple(args.gin_bindings),
      gin_search_paths=tuple(p for p in args.gin_search_paths.split(',') if p))


def main(argv: Sequence[str]) -> None:
  config = parse_args(argv)
  table, failed = compare(config)
  if table:
    print(table)
    print(f'wrote {os.path.join(config.output_dir, outputs.OUTPUT_NAME)}'
          '.{md,json,png}')
  if failed:
    sys.exit(f'error: {len(failed)} of {len(config.runs())} runs failed '
             f'({", ".join(failed)}); see their {runs_lib.LOG_FILE}, fix, '
             'and run the same command again')
