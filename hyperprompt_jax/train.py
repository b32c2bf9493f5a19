r"""Train, checkpoint and evaluate from gin files (t5x's flags and macros).

  python -m hyperprompt_jax.train \
    --gin_file=gin/runs/synthetic_global_tiny.gin \
    --gin.MODEL_DIR="'/tmp/run'" --gin.TRAIN_STEPS=500

Multi-process (one process per host, e.g. GPUs on several machines): add
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`, or
`--distributed` where `jax.distributed.initialize()` finds the cluster itself
(Cloud TPU, SLURM).
"""

import argparse
from typing import Sequence

import gin

from hyperprompt_jax import gin_utils


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = gin_utils.command_parser('train', __doc__)
  gin_utils.add_gin_flags(
      parser, 'gin file (repeatable); relative paths are searched in '
      '--gin_search_paths, ., and the repo gin/ dir')
  parser.add_argument('--distributed', action='store_true',
                      help='call jax.distributed.initialize() (auto-detected '
                      'cluster) before anything else')
  parser.add_argument('--coordinator_address', default=None)
  parser.add_argument('--num_processes', type=int, default=None)
  parser.add_argument('--process_id', type=int, default=None)
  return parser.parse_args(gin_utils.rewrite_gin_args(argv))


def main(argv: Sequence[str]) -> None:
  args = parse_args(argv)
  import jax  # pylint: disable=g-import-not-at-top
  if args.distributed or args.coordinator_address:
    jax.distributed.initialize(args.coordinator_address, args.num_processes,
                               args.process_id)
  # Imported after jax.distributed: they touch the backend.
  from hyperprompt_jax.training import train_loop  # pylint: disable=g-import-not-at-top
  gin_utils.parse_gin(args.gin_file, args.gin_bindings,
                      [p for p in args.gin_search_paths.split(',') if p])
  gin.get_configurable(train_loop.train)()


if __name__ == '__main__':
  gin_utils.run_main(main)
