r"""What resuming costs the input pipeline, at position 0 and far into a run.

  python -m hyperprompt_jax.resume_bench [--positions=0,50000]
    [--mixture=synthetic_mixture] [--lengths=32,16] [--batch_size=1]
    [--pack=true] [--repeats=3] [--output=FILE]

For each position N (batches consumed), the training pipeline is advanced N
batches once (the time this takes is what a replaying resume would cost),
its state saved as checkpoints save it (`iterator_checkpoint`), and then a
resume is timed `--repeats` times: build the dataset, restore the state,
read the first batch. Every resume must give the batch that the advanced
pipeline gives next. Reported: medians of the resume time, the advance time,
the saved state's size, and the ratio of each resume time to position 0's.
"""

import argparse
import json
import pathlib
import statistics
import tempfile
import time
from typing import Sequence

import numpy as np
import orbax.checkpoint as ocp

from hyperprompt_jax.checkpointing import iterator_checkpoint
from hyperprompt_jax.data import feature_converter
from hyperprompt_jax.data import pipeline
from hyperprompt_jax import gin_utils
from hyperprompt_jax import tables


def _iterator(cfg: pipeline.DatasetConfig):
  dataset = pipeline.get_dataset(
      cfg, feature_converter.HyperPromptEncDecFeatureConverter)
  return iter(dataset)


def _numpy(batch) -> dict[str, np.ndarray]:
  return {k: v.numpy() for k, v in batch.items()}


def bench_position(cfg: pipeline.DatasetConfig, position: int, repeats: int,
                   workdir: pathlib.Path) -> dict[str, float]:
  """Advances to `position`, saves, then times `repeats` resumes."""
  checkpointer = ocp.Checkpointer(iterator_checkpoint.IteratorHandler())
  iterator = _iterator(cfg)
  start = time.perf_counter()
  for _ in range(position):
    next(iterator)
  advance = time.perf_counter() - start
  path = workdir / str(position)
  checkpointer.save(path, args=iterator_checkpoint.IteratorSave(iterator))
  expected = _numpy(next(iterator))

  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    resumed = checkpointer.restore(
        path, args=iterator_checkpoint.IteratorRestore(_iterator(cfg)))
    batch = _numpy(next(resumed))
    seconds.append(time.perf_counter() - start)
    if any(not np.array_equal(batch[k], v) for k, v in expected.items()):
      raise AssertionError(f'the resumed pipeline at batch {position} gave '
                           'another batch than the uninterrupted one')
  state_bytes = sum(f.stat().st_size for f in path.rglob('*') if f.is_file())
  return {'position': position, 'advance_seconds': advance,
          'resume_seconds': statistics.median(seconds),
          'state_mib': state_bytes / 2**20}


def format_table(rows: Sequence[dict[str, float]]) -> str:
  base = rows[0]['resume_seconds']
  columns = [tables.Column('position', 9), tables.Column('resume s', 9),
             tables.Column('vs first', 9), tables.Column('advance s', 10),
             tables.Column('state MiB', 10)]
  return tables.text_table(columns, [
      [str(r['position']), f'{r["resume_seconds"]:.3f}',
       f'{r["resume_seconds"] / base:.2f}x', f'{r["advance_seconds"]:.1f}',
       f'{r["state_mib"]:.2f}'] for r in rows])


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = gin_utils.command_parser('resume_bench', __doc__)
  parser.add_argument('--positions', default='0,50000',
                      help='comma-separated batch positions')
  parser.add_argument('--mixture', default='synthetic_mixture')
  parser.add_argument('--lengths', default='32,16', help='INPUTS,TARGETS')
  parser.add_argument('--batch_size', type=int, default=1)
  parser.add_argument('--pack', default='true', choices=('true', 'false'))
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--output', default=None, help='write JSON here')
  return parser.parse_args(argv)


def main(argv: Sequence[str]) -> None:
  args = parse_args(argv)
  try:
    positions = [int(p) for p in args.positions.split(',')]
    inputs, targets = map(int, args.lengths.split(','))
  except ValueError:
    raise ValueError(f'bad --positions={args.positions!r} or --lengths='
                     f'{args.lengths!r}: write e.g. --positions=0,50000 '
                     '--lengths=32,16') from None
  from hyperprompt_jax import tasks  # pylint: disable=g-import-not-at-top
  tasks.get_mixture_or_task(args.mixture)
  cfg = pipeline.DatasetConfig(args.mixture, {'inputs': inputs, 'targets': targets},
                           batch_size=args.batch_size, pack=args.pack == 'true')
  print(f'{args.mixture}, batch {args.batch_size}, lengths {inputs}/{targets}, '
        f'pack {cfg.pack}, {args.repeats} resumes per position', flush=True)
  with tempfile.TemporaryDirectory() as workdir:
    rows = [bench_position(cfg, p, args.repeats, pathlib.Path(workdir))
            for p in positions]
  print(format_table(rows))
  if args.output:
    with open(args.output, 'w') as f:
      json.dump({'mixture': args.mixture, 'batch_size': args.batch_size,
                 'lengths': [inputs, targets], 'pack': cfg.pack,
                 'repeats': args.repeats, 'results': rows}, f, indent=2)
    print(f'wrote {args.output}')


if __name__ == '__main__':
  gin_utils.run_main(main)
