r"""Our train step beside t5x's own, on the same network and batch.

  python -m hyperprompt_jax.t5x_bench [--size=tiny|d256|small]
    [--variants=none,global] [--rows=packed,mixed,unpacked] [--steps=10]
    [--rounds=3] [--batch_size=N] [--lengths=INPUTS,TARGETS]
    [--whole_run_steps=N] [--whole_run_rounds=1] [--output=FILE]

Both trainers get the network of gin/models/t5_1_1_<size>.gin and
gin/variants/<variant>.gin, Adafactor with T5's settings (decay 0.8,
factored second moments, update clipping 1, parameter scaling), a constant
learning rate, z-loss 1e-4, one data-parallel mesh over all devices and the
same random batch (`bench.random_batch`). Each round times `--steps` compiled
steps of ours, then of t5x's (median per step, blocking on results); the
reported ratio is the median over rounds of t5x's step time over ours
(above 1: ours is faster).

`--whole_run_steps=N` also trains each variant's `make train` run
(gin/runs/synthetic_<variant>_tiny.gin: tiny network, synthetic mixture,
packed batches of 32, lengths 32/16) for N steps with each trainer, one
after the other as subprocesses, input pipeline, logging and all: ours
through `python -m hyperprompt_jax.train`, t5x's through `python -m t5x.train`
with gin/t5x/runs/synthetic_tiny.gin at the same batch. Each reports steps
per second over its logged windows; the median over windows after the first
(which compiles) is compared. `--whole_run_rounds=R` repeats the pair R times,
alternating which trainer goes first, and reports the median of the
per-round ratios. Needs t5x (`make t5x`); without it the command
says so in one line and exits 0.
"""

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Sequence

import jax
import numpy as np

from hyperprompt_jax.conditioning import hyperprompt_config
from hyperprompt_jax.data import pipeline
from hyperprompt_jax import gin_utils
from hyperprompt_jax import tables
from hyperprompt_jax.tools import bench
from hyperprompt_jax.tools.compare import runs as compare_runs

T5X_MISSING = ('t5x is not installed, so there is nothing to compare with: '
               'run `make t5x` first')


@dataclasses.dataclass(frozen=True)
class SideBySide:
  """Median step seconds of both trainers on one variant and row layout."""
  variant: str
  rows: str
  ours_seconds: float
  t5x_seconds: float
  flops_ours: float
  flops_t5x: float

  @property
  def speedup(self) -> float:
    """t5x's step time over ours: above 1 when ours is faster."""
    return self.t5x_seconds / self.ours_seconds


def t5x_train_step(model, host_batch):
  """(compiled step, train state) of t5x's `Trainer` for our network."""
  # pylint: disable=g-import-not-at-top
  from t5x import adafactor
  from t5x import partitioning as t5x_partitioning
  from t5x import trainer as t5x_trainer
  from t5x import utils
  from hyperprompt_jax.t5x_integration import model as t5x_model
  # pylint: enable=g-import-not-at-top
  optimizer = adafactor.Adafactor(
      decay_rate=0.8, step_offset=0,
      logical_factor_rules=t5x_model.adafactor_logical_factor_rules())
  vocabulary = model.input_vocabulary
  t5x = t5x_model.HyperPromptEncoderDecoderModel(
      model.module, vocabulary, vocabulary, optimizer, z_loss=1e-4)
  partitioner = t5x_partitioning.PjitPartitioner(
      num_partitions=1,
      logical_axis_rules=t5x_partitioning.standard_logical_axis_rules(
          additional_rules=t5x_model.hyperprompt_axis_rules()))
  shapes = {k: v.shape for k, v in host_batch.items()}
  types = {k: v.dtype for k, v in host_batch.items()}
  initializer = utils.TrainStateInitializer(
      optimizer, t5x.get_initial_variables, shapes, partitioner, types)
  state = initializer.from_scratch(jax.random.PRNGKey(0))
  trainer = t5x_trainer.Trainer(
      t5x, state, partitioner, eval_names=[], summary_dir=None,
      train_state_axes=initializer.train_state_axes,
      rng=jax.random.PRNGKey(0),
      learning_rate_fn=utils.create_learning_rate_scheduler(
          factors='constant', base_learning_rate=1e-3),
      num_microbatches=None)
  batch = jax.tree.map(jax.numpy.asarray, host_batch)
  compiled = partitioner.compile(trainer._partitioned_train_step,  # pylint: disable=protected-access
                                 state, batch)
  return compiled, state, batch


def side_by_side(size: str, variant: str, rows: str, shape: bench.Shape,
                 dtype: str, steps: int, rounds: int) -> SideBySide:
  """Alternates `rounds` timings of our compiled step and t5x's."""
  model = bench.build_model(size, variant, shape.vocab_size, dtype, rows)
  host_batch = bench.random_batch(shape, model.module.config.vocab_size, rows)
  trainer = bench.build_trainer(model, host_batch)
  ours_state = trainer.init_state()
  ours_batch = pipeline.to_global(host_batch, trainer.batch_sharding)
  ours = trainer.compile_train_step(ours_state, ours_batch)
  theirs, t5x_state, t5x_batch = t5x_train_step(model, host_batch)
  ours_times, t5x_times = [], []
  for _ in range(rounds):
    with trainer.activate():
      ours_state, seconds = bench.median_step_seconds(
          ours, ours_state, ours_batch, steps)
    ours_times.append(seconds)
    t5x_state, seconds = bench.median_step_seconds(
        theirs, t5x_state, t5x_batch, steps)
    t5x_times.append(seconds)
  return SideBySide(variant, rows, statistics.median(ours_times),
                    statistics.median(t5x_times), bench.step_flops(ours),
                    bench.step_flops(theirs))


@dataclasses.dataclass(frozen=True)
class WholeRuns:
  """Median logged steps per second of one variant's run with each trainer,
  one value per round."""
  variant: str
  steps: int
  ours_steps_per_second: tuple[float, ...]
  t5x_steps_per_second: tuple[float, ...]

  @property
  def speedup(self) -> float:
    """Median over rounds of our rate over t5x's: above 1 when ours is
    faster."""
    return statistics.median(
        ours / t5x for ours, t5x in zip(self.ours_steps_per_second,
                                        self.t5x_steps_per_second))


def _run(command: list[str]) -> None:
  result = subprocess.run(command, capture_output=True, text=True)
  if result.returncode:
    raise RuntimeError(f'{" ".join(command)} failed:\n{result.stderr[-3000:]}')


def _ours_steps_per_second(variant: str, steps: int, log_period: int,
                           workdir: str) -> float:
  model_dir = os.path.join(workdir, 'ours')
  _run([sys.executable, '-m', 'hyperprompt_jax.train',
        f'--gin_file=runs/synthetic_{variant}_tiny.gin',
        f"--gin.MODEL_DIR='{model_dir}'", f'--gin.TRAIN_STEPS={steps}',
        f'--gin.LOG_PERIOD={log_period}',
        f'--gin.CHECKPOINT_PERIOD={steps}', '--gin.EVAL_NUM_EXAMPLES=64'])
  step_seconds = compare_runs.step_time_seconds(model_dir)
  return _check_windows(step_seconds and 1 / step_seconds, steps, log_period)


def _t5x_steps_per_second(variant: str, steps: int, log_period: int,
                          workdir: str) -> float:
  model_dir = os.path.join(workdir, 't5x')
  periods = os.path.join(workdir, 'periods.gin')
  with open(periods, 'w') as f:  # t5x.train's own flags cannot name these
    f.write('from __gin__ import dynamic_registration\n'
            'import __main__ as train_script\n'
            'from t5x import utils\n'
            f'train_script.train.eval_period = {steps}\n'
            f'train_script.train.stats_period = {log_period}\n'
            f'utils.SaveCheckpointConfig.period = {steps}\n')
  _run([sys.executable, '-m', 't5x.train',
        f'--gin_search_paths={gin_utils.DEFAULT_GIN_DIR}',
        f'--gin_file=variants/{variant}.gin',
        '--gin_file=t5x/runs/synthetic_tiny.gin', f'--gin_file={periods}',
        f"--gin.MODEL_DIR='{model_dir}'", f'--gin.TRAIN_STEPS={steps}',
        '--gin.BATCH_SIZE=32'])
  rates = compare_runs.logged_windows(model_dir, 'timing/steps_per_second')
  return _check_windows(rates and float(np.median(rates)), steps, log_period)


def _check_windows(rate, steps: int, log_period: int) -> float:
  if not rate:
    raise ValueError(f'--whole_run_steps={steps} logs too few windows of '
                     f'{log_period} steps: use at least {3 * log_period}')
  return rate


def whole_runs(variant: str, steps: int, log_period: int,
               rounds: int = 1) -> WholeRuns:
  """Trains the variant's `make train` run with each trainer for `steps`,
  `rounds` times, the trainer that goes first alternating between rounds so
  that drifting load falls on both alike."""
  ours, t5x = [], []
  for i in range(rounds):
    runs = [(ours, _ours_steps_per_second), (t5x, _t5x_steps_per_second)]
    for rates, run in runs[::1 if i % 2 == 0 else -1]:
      with tempfile.TemporaryDirectory() as workdir:
        rates.append(run(variant, steps, log_period, workdir))
  return WholeRuns(variant, steps, tuple(ours), tuple(t5x))


_COLUMNS = (tables.Column('variant', 13, '<'), tables.Column('rows', 9, '<'),
            tables.Column('ours ms', 9), tables.Column('t5x ms', 8),
            tables.Column('t5x/ours', 9), tables.Column('GFLOP ours', 11),
            tables.Column('GFLOP t5x', 10))


def format_table(results: Sequence[SideBySide]) -> str:
  return tables.text_table(_COLUMNS, [
      [r.variant, r.rows, f'{r.ours_seconds * 1e3:.2f}',
       f'{r.t5x_seconds * 1e3:.2f}', f'{r.speedup:.2f}x',
       f'{r.flops_ours / 1e9:.3f}', f'{r.flops_t5x / 1e9:.3f}']
      for r in results])


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = gin_utils.command_parser('t5x_bench', __doc__)
  bench.add_shape_flags(parser)
  parser.add_argument('--variants', default='none,global',
                      help='comma-separated variants')
  parser.add_argument('--rows', default=','.join(bench.ROWS),
                      help='comma-separated: packed, mixed, unpacked')
  parser.add_argument('--rounds', type=int, default=3,
                      help='alternating timing rounds (median)')
  parser.add_argument('--whole_run_steps', type=int, default=0,
                      help='also time each variant\'s make-train run with both '
                      'trainers for this many steps (0: no)')
  parser.add_argument('--whole_run_rounds', type=int, default=1,
                      help='runs of each trainer per variant, alternating '
                      '(median of the per-round ratios)')
  parser.add_argument('--log_period', type=int, default=50,
                      help='steps per logged window of the whole runs')
  parser.add_argument('--output', default=None, help='write JSON here')
  return parser.parse_args(argv)


def main(argv: Sequence[str]) -> None:
  args = parse_args(argv)
  variants = bench.csv_values('--variants', args.variants,
                              hyperprompt_config.VARIANTS)
  rows = bench.csv_values('--rows', args.rows, bench.ROWS)
  shape, dtype = bench.shape_from_args(args)
  try:
    import t5x.trainer  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    print(T5X_MISSING)
    return
  print(bench.describe(args.size, shape, dtype), flush=True)
  results = []
  for variant in variants:
    for layout in rows:
      if not bench.measured(variant, layout):
        continue
      results.append(side_by_side(args.size, variant, layout, shape, dtype,
                                  args.steps, args.rounds))
      print(format_table(results).splitlines()[-1], flush=True)
  print(format_table(results))
  runs = []
  if args.whole_run_steps:
    print(f"{'variant':<14}{'steps':>7}{'ours steps/s':>14}{'t5x steps/s':>13}"
          f"{'ours/t5x':>10}", flush=True)
    for variant in variants:
      runs.append(whole_runs(variant, args.whole_run_steps, args.log_period,
                             args.whole_run_rounds))
      r = runs[-1]
      print(f'{r.variant:<14}{r.steps:>7}'
            f'{statistics.median(r.ours_steps_per_second):>14.1f}'
            f'{statistics.median(r.t5x_steps_per_second):>13.1f}'
            f'{r.speedup:>9.2f}x', flush=True)
  if args.output:
    with open(args.output, 'w') as f:
      json.dump({
          'device_kind': jax.devices()[0].device_kind,
          'num_devices': jax.device_count(), 'size': args.size,
          'dtype': dtype, **dataclasses.asdict(shape),
          'results': [dict(dataclasses.asdict(r), speedup=r.speedup)
                      for r in results],
          'whole_runs': [dict(dataclasses.asdict(r), speedup=r.speedup)
                         for r in runs],
      }, f, indent=2)
    print(f'wrote {args.output}')


if __name__ == '__main__':
  gin_utils.run_main(main)
