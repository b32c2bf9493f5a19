r"""Train-step throughput of every task-conditioning variant.

  python -m hyperprompt_jax.bench [--size=tiny|small] [--variants=global,none]
    [--steps=5] [--batch_size=N] [--lengths=INPUTS,TARGETS] [--output=FILE]

For each variant: the network from gin/models/t5_1_1_<size>.gin and
gin/variants/<variant>.gin, trained by the standalone `Trainer` (Adafactor,
data-parallel over all devices) on full random rows with random task ids.
Reported: compile seconds of the train step (ahead of time), mean step
seconds after it, tokens/s (input + target tokens of the global batch per
step), parameter count, and the devices' peak memory where the backend
reports it (GPU/TPU; null on CPU).
"""

import argparse
import dataclasses
import json
import sys
import time
from typing import Optional, Sequence

import gin
import jax
import numpy as np
import seqio

from hyperprompt_jax import data
from hyperprompt_jax import gin_utils
from hyperprompt_jax import hyperprompt_config
from hyperprompt_jax import mesh as mesh_lib
from hyperprompt_jax import model as model_lib
from hyperprompt_jax import network
from hyperprompt_jax import optimizers
from hyperprompt_jax import trainer as trainer_lib

NUM_TASKS = 6  # as the synthetic mixture
# size -> (global batch, inputs length, targets length, vocabulary size):
# tiny as `make train` (byte vocabulary), small as a GLUE run (T5's
# SentencePiece vocabulary from the model file).
DEFAULT_SHAPES = {'tiny': (32, 32, 16, 384), 'small': (8, 512, 128, None)}


@dataclasses.dataclass(frozen=True)
class BenchResult:
  """Throughput of one variant; times in seconds."""
  variant: str
  vocab_size: int
  num_params: int
  compile_seconds: float
  step_seconds: float
  tokens_per_second: float
  peak_memory_bytes: Optional[int]


def build_model(size: str, variant: str, vocab_size: Optional[int] = None
                ) -> model_lib.EncoderDecoderModel:
  """The gin-configured network of `size` x `variant`, tokens as vocabulary.

  `vocab_size` overrides the model file's (None keeps it).
  """
  gin.clear_config()
  bindings = [f'NUM_TASKS = {NUM_TASKS}']
  if vocab_size:
    bindings.append(f'network.T5Config.vocab_size = {vocab_size}')
  gin_utils.parse_gin([f'models/t5_1_1_{size}.gin', f'variants/{variant}.gin'],
                      bindings)
  module = gin.get_configurable(network.Transformer)()
  vocabulary = seqio.PassThroughVocabulary(module.config.vocab_size)
  return model_lib.EncoderDecoderModel(module, vocabulary, vocabulary)


def random_batch(batch_size: int, input_length: int, target_length: int,
                 vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Full rows (no padding), one random task per row."""
  rng = np.random.RandomState(seed)
  inputs = rng.randint(2, vocab_size, (batch_size, input_length))
  targets = rng.randint(2, vocab_size, (batch_size, target_length))
  task = rng.randint(0, NUM_TASKS, (batch_size, 1))
  batch = {
      'encoder_input_tokens': inputs,
      'decoder_target_tokens': targets,
      'decoder_input_tokens': np.pad(targets[:, :-1], ((0, 0), (1, 0))),
      'decoder_loss_weights': np.ones_like(targets),
      'encoder_task_ids': np.repeat(task, input_length, 1),
      'decoder_task_ids': np.repeat(task, target_length, 1),
  }
  return {k: v.astype(np.float32 if k == 'decoder_loss_weights' else np.int32)
          for k, v in batch.items()}


def _peak_memory_bytes() -> Optional[int]:
  stats = [d.memory_stats() for d in jax.local_devices()]
  peaks = [s['peak_bytes_in_use'] for s in stats
           if s and 'peak_bytes_in_use' in s]
  return max(peaks) if peaks else None


def bench_variant(size: str, variant: str, batch_size: int, input_length: int,
                  target_length: int, vocab_size: Optional[int],
                  steps: int) -> BenchResult:
  """Compiles and times `steps` train steps of one variant."""
  model = build_model(size, variant, vocab_size)
  host_batch = random_batch(batch_size, input_length, target_length,
                            model.module.config.vocab_size)
  trainer = trainer_lib.Trainer(
      model, optimizers.Adafactor(), optimizers.Schedule(),
      mesh_lib.MeshConfig().make_mesh(),
      {k: v.shape for k, v in host_batch.items()})
  state = trainer.init_state()
  batch = data.to_global(host_batch, trainer.batch_sharding)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))

  start = time.perf_counter()
  train_step = trainer.compile_train_step(state, batch)
  compile_seconds = time.perf_counter() - start
  with trainer.activate():
    state, metrics = train_step(state, batch)  # warm-up: first-run overheads
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = train_step(state, batch)
    jax.block_until_ready((state, metrics))
  step_seconds = (time.perf_counter() - start) / steps
  return BenchResult(
      variant=variant, vocab_size=model.module.config.vocab_size,
      num_params=int(num_params),
      compile_seconds=compile_seconds, step_seconds=step_seconds,
      tokens_per_second=batch_size * (input_length + target_length)
      / step_seconds,
      peak_memory_bytes=_peak_memory_bytes())


def format_table(results: Sequence[BenchResult]) -> str:
  header = (f"{'variant':<14}{'params':>12}{'compile s':>11}{'step ms':>10}"
            f"{'tokens/s':>12}{'peak MiB':>10}")
  lines = [header]
  for r in results:
    peak = ('-' if r.peak_memory_bytes is None
            else f'{r.peak_memory_bytes / 2**20:.0f}')
    lines.append(f'{r.variant:<14}{r.num_params:>12,}{r.compile_seconds:>11.1f}'
                 f'{r.step_seconds * 1e3:>10.1f}{r.tokens_per_second:>12,.0f}'
                 f'{peak:>10}')
  return '\n'.join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='python -m hyperprompt_jax.bench', description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--size', choices=sorted(DEFAULT_SHAPES), default='tiny')
  parser.add_argument('--variants', default=','.join(hyperprompt_config.VARIANTS),
                      help='comma-separated variants')
  parser.add_argument('--steps', type=int, default=5,
                      help='timed steps per variant, after compile and warm-up')
  parser.add_argument('--batch_size', type=int, default=None,
                      help='global batch (default: 32 tiny, 8 small)')
  parser.add_argument('--lengths', default=None,
                      help='INPUTS,TARGETS lengths (default: 32,16 tiny; '
                      '512,128 small)')
  parser.add_argument('--vocab_size', type=int, default=None,
                      help="default: 384 tiny (as make train); the model "
                      "file's for small")
  parser.add_argument('--output', default=None, help='write JSON here')
  return parser.parse_args(argv)


def main(argv: Sequence[str]) -> None:
  args = parse_args(argv)
  batch_size, input_length, target_length, vocab_size = DEFAULT_SHAPES[
      args.size]
  batch_size = args.batch_size or batch_size
  vocab_size = args.vocab_size or vocab_size
  if args.lengths:
    try:
      input_length, target_length = map(int, args.lengths.split(','))
    except ValueError as e:
      raise ValueError(f'bad --lengths={args.lengths!r}: write INPUTS,TARGETS, '
                       'e.g. --lengths=32,16') from e
  variants = [v for v in args.variants.split(',') if v]
  unknown = sorted(set(variants) - set(hyperprompt_config.VARIANTS))
  if unknown or args.steps < 1:
    raise ValueError(f'bad --variants {unknown} or --steps={args.steps}: use '
                     f'variants from {", ".join(hyperprompt_config.VARIANTS)} '
                     'and --steps >= 1')

  devices = jax.devices()
  print(f'{len(devices)} x {devices[0].device_kind} ({jax.default_backend()}), '
        f'size {args.size}, batch {batch_size}, lengths '
        f'{input_length}/{target_length}, vocabulary '
        f'{vocab_size or "of the model file"}', flush=True)
  results = []
  for variant in variants:
    results.append(bench_variant(args.size, variant, batch_size, input_length,
                                 target_length, vocab_size, args.steps))
    print(format_table(results[-1:]).splitlines()[-1], flush=True)
  print(format_table(results))
  if args.output:
    with open(args.output, 'w') as f:
      json.dump({
          'backend': jax.default_backend(),
          'device_kind': devices[0].device_kind,
          'num_devices': len(devices),
          'size': args.size,
          'batch_size': batch_size,
          'input_length': input_length,
          'target_length': target_length,
          'steps': args.steps,
          'results': [dataclasses.asdict(r) for r in results],
      }, f, indent=2)
    print(f'wrote {args.output}')


if __name__ == '__main__':
  gin_utils.run_main(main)
