r"""Compiled train-step speed, FLOPs and MFU of every task-conditioning variant.

  python -m hyperprompt_jax.bench [--size=tiny|d256|small]
    [--variants=none,global,...] [--rows=packed,mixed,unpacked] [--steps=10]
    [--rounds=3] [--batch_size=N] [--lengths=INPUTS,TARGETS] [--vocab_size=V]
    [--dtype=float32|bfloat16] [--output=FILE]

For each variant and row layout: the network of gin/models/t5_1_1_<size>.gin
and gin/variants/<variant>.gin, trained by the standalone `Trainer`
(Adafactor, data-parallel over all devices) on full random rows: `mixed` as
training packs them by default (several examples of random tasks per row,
routed by token: ONE_TASK_PER_ROW = False), `packed` as it packs them with
ONE_TASK_PER_ROW = True (several examples of one random task per row, routed
by row) or `unpacked` (one example per row); all three by default (prompt
tuning: unpacked only). Every row is compiled first; then `--rounds` rounds
each time every row in turn, so that load on a shared machine falls on all
rows alike. Only the compiled step is timed, blocking on its results: a
row's step time is the median over rounds of each round's median of
`--steps` steps, reported beside the FLOPs of one step (XLA's cost analysis, all
devices), the achieved FLOP/s and the MFU: achieved FLOP/s over a peak
measured on the same devices just before each round of the row (a large
matmul in the run's dtype, median of 10), or the chip's bf16 peak for known
GPUs.
"""

import argparse
import dataclasses
import json
import statistics
import time
from typing import Any, Callable, Optional, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np
import seqio

from hyperprompt_jax.conditioning import hyperprompt_config
from hyperprompt_jax.data import pipeline
from hyperprompt_jax import gin_utils
from hyperprompt_jax.model import encoder_decoder as model_lib
from hyperprompt_jax.model import network
from hyperprompt_jax.sharding import mesh as mesh_lib
from hyperprompt_jax import tables
from hyperprompt_jax.training import optimizers
from hyperprompt_jax.training import trainer as trainer_lib

NUM_TASKS = 6  # as the synthetic mixture
EXAMPLES_PER_PACKED_ROW = 4
ROWS = ('packed', 'mixed', 'unpacked')
# Side of the square matmul that measures a CPU's (or unknown chip's) peak:
# large enough that the machine reaches its matmul rate.
PEAK_MATMUL_SIZE = 2048
# Dense bf16 peak FLOP/s per chip of known accelerators (datasheets).
CHIP_PEAK_FLOPS = {
    'NVIDIA H100 80GB HBM3': 989e12,
    'NVIDIA H200': 989e12,
    'NVIDIA A100-SXM4-80GB': 312e12,
    'NVIDIA A100-SXM4-40GB': 312e12,
}


@dataclasses.dataclass(frozen=True)
class Shape:
  """A benchmark shape; `vocab_size` None keeps the model file's."""
  batch_size: int
  input_length: int
  target_length: int
  vocab_size: Optional[int]


# tiny: `make train`'s shape (byte vocabulary); d256: a 4+4-layer d_model 256
# network on longer rows; small: a GLUE run of T5.1.1 Small.
SHAPES = {
    'tiny': Shape(32, 32, 16, 384),
    'd256': Shape(16, 128, 32, 384),
    'small': Shape(8, 512, 128, None),
}


@dataclasses.dataclass(frozen=True)
class BenchResult:
  """One variant on one row layout; times in seconds."""
  variant: str
  rows: str
  vocab_size: int
  num_params: int
  compile_seconds: float
  step_seconds: float
  tokens_per_second: float
  flops_per_step: float
  flops_per_second: float
  mfu: float
  peak_flops_per_second: float
  peak_memory_bytes: Optional[int]


def build_model(size: str, variant: str, vocab_size: Optional[int],
                dtype: Optional[str], rows: str
                ) -> model_lib.EncoderDecoderModel:
  """The gin-configured network of `size` x `variant`, tokens as vocabulary.

  `vocab_size` and `dtype` override the model file's (None keeps them);
  `rows='mixed'` routes packed rows by token (ONE_TASK_PER_ROW = False).
  """
  gin.clear_config()
  bindings = [f'NUM_TASKS = {NUM_TASKS}',
              f'ONE_TASK_PER_ROW = {rows != "mixed"}']
  if vocab_size:
    bindings.append(f'network.T5Config.vocab_size = {vocab_size}')
  if dtype:
    bindings.append(f"network.T5Config.dtype = '{dtype}'")
  gin_utils.parse_gin([f'models/t5_1_1_{size}.gin', f'variants/{variant}.gin'],
                      bindings)
  module = gin.get_configurable(network.Transformer)()
  vocabulary = seqio.PassThroughVocabulary(module.config.vocab_size)
  return model_lib.EncoderDecoderModel(module, vocabulary, vocabulary)


def measured(variant: str, rows: str) -> bool:
  """Whether `variant` trains on `rows`: prompt tuning prepends its prompts
  to whole rows, so it is never packed."""
  return rows == 'unpacked' or hyperprompt_config.pack_examples(
      hyperprompt_config.HyperPromptConfig(variant=variant))


def _segments(batch_size: int, length: int, pack: bool):
  """Segment ids (from 1) and positions `[batch, length]` of full rows."""
  parts = EXAMPLES_PER_PACKED_ROW if pack else 1
  if length % parts:
    raise ValueError(f'--lengths: {length} is not divisible by the '
                     f'{parts} examples of a packed row')
  segment_ids = np.repeat(np.arange(1, parts + 1), length // parts)
  positions = np.tile(np.arange(length // parts), parts)
  return (np.broadcast_to(segment_ids, (batch_size, length)),
          np.broadcast_to(positions, (batch_size, length)))


def random_batch(shape: Shape, vocab_size: int, rows: str,
                 seed: int = 0) -> dict[str, np.ndarray]:
  """Full rows (no padding) of random tokens, laid out as `rows` says.

  Unpacked rows hold one example of one random task. Packed rows hold
  `EXAMPLES_PER_PACKED_ROW` equal-length examples, with the segment ids and
  positions of seqio's packing: of one random task per row (`packed`, as
  our feature converter packs with `one_task_per_row`), or each of a random
  task (`mixed`, as it packs by default). Rows of one task carry `task_ids`
  `[batch]`, mixed rows `encoder_task_ids` / `decoder_task_ids`
  `[batch, length]`, as the feature converter gives them.
  """
  rng = np.random.RandomState(seed)
  b = shape.batch_size
  pack = rows != 'unpacked'
  inputs = rng.randint(2, vocab_size, (b, shape.input_length))
  targets = rng.randint(2, vocab_size, (b, shape.target_length))
  enc_segments, enc_positions = _segments(b, shape.input_length, pack)
  dec_segments, dec_positions = _segments(b, shape.target_length, pack)
  # Task of each row's segments 1.. (column 0: segment 0, never used).
  tasks = rng.randint(0, NUM_TASKS, (b, EXAMPLES_PER_PACKED_ROW + 1))
  # Each example's decoder input is its targets shifted right, from 0.
  shifted = np.where(dec_positions == 0, 0, np.roll(targets, 1, axis=1))
  batch = {
      'encoder_input_tokens': inputs,
      'decoder_target_tokens': targets,
      'decoder_input_tokens': shifted,
      'decoder_loss_weights': np.ones_like(targets),
  }
  if rows == 'mixed':
    batch.update(encoder_task_ids=np.take_along_axis(tasks, enc_segments, 1),
                 decoder_task_ids=np.take_along_axis(tasks, dec_segments, 1))
  else:
    batch.update(task_ids=tasks[:, 1])
  if pack:
    batch.update(encoder_segment_ids=enc_segments,
                 decoder_segment_ids=dec_segments,
                 encoder_positions=enc_positions,
                 decoder_positions=dec_positions)
  return {k: np.asarray(v, np.float32 if k == 'decoder_loss_weights'
                        else np.int32) for k, v in batch.items()}


def step_flops(compiled) -> float:
  """FLOPs of one call of a compiled program, by XLA's cost analysis."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # one entry per device on some backends
    return float(sum(c.get('flops', 0.0) for c in cost))
  return float(cost.get('flops', 0.0))


def median_step_seconds(step: Callable[[Any, Any], tuple[Any, Any]], state,
                        batch, steps: int) -> tuple[Any, float]:
  """Median seconds of `steps` calls `state, metrics = step(state, batch)`.

  One untimed warm-up call first; each timed call is blocked on before the
  clock is read. Returns the last state (the input state may be donated).
  """
  state, metrics = step(state, batch)
  jax.block_until_ready((state, metrics))
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  return state, statistics.median(times)


def peak_flops_per_second(dtype: str, size: Optional[int] = None,
                          repeats: int = 10) -> tuple[float, str]:
  """(FLOP/s, source) of the devices together: a known chip's bf16 peak, or
  a `size`-square matmul per device in `dtype` (default
  PEAK_MATMUL_SIZE), timed here (median)."""
  size = size or PEAK_MATMUL_SIZE
  devices = jax.devices()
  kind = devices[0].device_kind
  if kind in CHIP_PEAK_FLOPS and dtype == 'bfloat16':
    return CHIP_PEAK_FLOPS[kind] * len(devices), f'{kind} bf16 datasheet'
  mesh = mesh_lib.MeshConfig().make_mesh()
  sharding = mesh_lib.batch_sharding(mesh)
  x = jax.device_put(jnp.ones((len(devices), size, size), dtype), sharding)
  matmul = jax.jit(lambda a: jnp.einsum('dij,djk->dik', a, a),
                   out_shardings=sharding)
  jax.block_until_ready(matmul(x))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(matmul(x))
    times.append(time.perf_counter() - start)
  flops = 2 * size**3 * len(devices)
  return flops / statistics.median(times), f'{size}^2 {dtype} matmul, measured'


def _peak_memory_bytes() -> Optional[int]:
  stats = [d.memory_stats() for d in jax.local_devices()]
  peaks = [s['peak_bytes_in_use'] for s in stats
           if s and 'peak_bytes_in_use' in s]
  return max(peaks) if peaks else None


def build_trainer(model: model_lib.EncoderDecoderModel,
                  batch: dict[str, np.ndarray]) -> trainer_lib.Trainer:
  """The standalone trainer (Adafactor, constant rate) over all devices."""
  return trainer_lib.Trainer(
      model, optimizers.Adafactor(), optimizers.Schedule(),
      mesh_lib.MeshConfig().make_mesh(),
      {k: v.shape for k, v in batch.items()})


@dataclasses.dataclass
class _Row:
  """One variant on one row layout, compiled and ready to time."""
  variant: str
  rows: str
  trainer: trainer_lib.Trainer
  compiled: Any
  state: Any
  batch: Any
  compile_seconds: float
  step_seconds: list[float] = dataclasses.field(default_factory=list)
  peaks: list[float] = dataclasses.field(default_factory=list)
  peak_memory_bytes: Optional[int] = None


def _compile_row(size: str, variant: str, rows: str, shape: Shape,
                 dtype: Optional[str]) -> _Row:
  """Builds and compiles the train step of one variant on one row layout."""
  model = build_model(size, variant, shape.vocab_size, dtype, rows)
  host_batch = random_batch(shape, model.module.config.vocab_size, rows)
  trainer = build_trainer(model, host_batch)
  state = trainer.init_state()
  batch = pipeline.to_global(host_batch, trainer.batch_sharding)
  start = time.perf_counter()
  compiled = trainer.compile_train_step(state, batch)
  return _Row(variant, rows, trainer, compiled, state, batch,
              time.perf_counter() - start)


def _time_row(row: _Row, dtype: str, steps: int) -> None:
  """One round of `row`: the peak, then the median of `steps` steps."""
  row.peaks.append(peak_flops_per_second(dtype)[0])
  with row.trainer.activate():
    row.state, seconds = median_step_seconds(row.compiled, row.state,
                                             row.batch, steps)
  if not row.step_seconds:
    # The devices' high-water mark when the row first ran, not after all rows.
    row.peak_memory_bytes = _peak_memory_bytes()
  row.step_seconds.append(seconds)


def _result(row: _Row, shape: Shape) -> BenchResult:
  """A row's result: medians over its rounds."""
  step_seconds = statistics.median(row.step_seconds)
  peak = statistics.median(row.peaks)
  flops = step_flops(row.compiled)
  tokens = shape.batch_size * (shape.input_length + shape.target_length)
  return BenchResult(
      variant=row.variant, rows=row.rows,
      vocab_size=row.trainer.model.module.config.vocab_size,
      num_params=int(sum(x.size for x in jax.tree.leaves(row.state.params))),
      compile_seconds=row.compile_seconds, step_seconds=step_seconds,
      tokens_per_second=tokens / step_seconds, flops_per_step=flops,
      flops_per_second=flops / step_seconds,
      mfu=flops / step_seconds / peak, peak_flops_per_second=peak,
      peak_memory_bytes=row.peak_memory_bytes)


_COLUMNS = (
    tables.Column('variant', 13, '<'), tables.Column('rows', 9, '<'),
    tables.Column('params', 11), tables.Column('compile s', 9),
    tables.Column('step ms', 8), tables.Column('vs none', 7),
    tables.Column('tokens/s', 9), tables.Column('GFLOP', 7),
    tables.Column('GFLOP/s', 8), tables.Column('MFU', 6),
    tables.Column('peak MiB', 8))


def format_table(results: Sequence[BenchResult]) -> str:
  """One line per result; `vs none` is the step time over `none`'s on the
  same rows (when `none` was measured)."""
  none = {r.rows: r.step_seconds for r in results if r.variant == 'none'}
  rows = []
  for r in results:
    ratio = (f'{r.step_seconds / none[r.rows]:.2f}x' if r.rows in none
             else '-')
    peak = ('-' if r.peak_memory_bytes is None
            else f'{r.peak_memory_bytes / 2**20:.0f}')
    rows.append([
        r.variant, r.rows, f'{r.num_params:,}', f'{r.compile_seconds:.1f}',
        f'{r.step_seconds * 1e3:.2f}', ratio, f'{r.tokens_per_second:,.0f}',
        f'{r.flops_per_step / 1e9:.2f}', f'{r.flops_per_second / 1e9:.1f}',
        f'{r.mfu:.1%}', peak])
  return tables.text_table(_COLUMNS, rows)


def csv_values(flag: str, text: str, allowed: Sequence[str]) -> list[str]:
  values = [v for v in text.split(',') if v]
  unknown = [v for v in values if v not in allowed]
  if unknown or not values:
    raise ValueError(f'bad {flag}={text!r}: give comma-separated values from '
                     f'{",".join(allowed)}')
  return values


def add_shape_flags(parser: argparse.ArgumentParser) -> None:
  """--size, --batch_size, --lengths, --vocab_size, --dtype, --steps."""
  parser.add_argument('--size', choices=sorted(SHAPES), default='tiny')
  parser.add_argument('--batch_size', type=int, default=None,
                      help='global batch (default: the size\'s, see SHAPES)')
  parser.add_argument('--lengths', default=None,
                      help='INPUTS,TARGETS lengths (default: the size\'s)')
  parser.add_argument('--vocab_size', type=int, default=None,
                      help="default: 384 for tiny and d256 (as make train); "
                      "the model file's for small")
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default=None,
                      help='activations dtype (default: bfloat16 on GPU/TPU, '
                      'float32 on CPU)')
  parser.add_argument('--steps', type=int, default=10,
                      help='timed steps (median), after compile and warm-up')


def shape_from_args(args: argparse.Namespace) -> tuple[Shape, str]:
  """The benchmark shape and dtype the flags ask for."""
  shape = SHAPES[args.size]
  if args.lengths:
    try:
      input_length, target_length = map(int, args.lengths.split(','))
    except ValueError as e:
      raise ValueError(f'bad --lengths={args.lengths!r}: write INPUTS,TARGETS, '
                       'e.g. --lengths=32,16') from e
    shape = dataclasses.replace(shape, input_length=input_length,
                                target_length=target_length)
  if args.batch_size:
    shape = dataclasses.replace(shape, batch_size=args.batch_size)
  if args.vocab_size:
    shape = dataclasses.replace(shape, vocab_size=args.vocab_size)
  if args.steps < 1:
    raise ValueError(f'bad --steps={args.steps}: time at least 1 step')
  dtype = args.dtype or ('float32' if jax.default_backend() == 'cpu'
                         else 'bfloat16')
  return shape, dtype


def describe(size: str, shape: Shape, dtype: str) -> str:
  devices = jax.devices()
  return (f'{len(devices)} x {devices[0].device_kind} ({jax.default_backend()})'
          f', size {size}, batch {shape.batch_size}, lengths '
          f'{shape.input_length}/{shape.target_length}, vocabulary '
          f'{shape.vocab_size or "of the model file"}, {dtype}')


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = gin_utils.command_parser('bench', __doc__)
  add_shape_flags(parser)
  parser.add_argument('--variants', default=','.join(hyperprompt_config.VARIANTS),
                      help='comma-separated variants')
  parser.add_argument('--rows', default=','.join(ROWS),
                      help='comma-separated: packed, mixed, unpacked')
  parser.add_argument('--rounds', type=int, default=3,
                      help='timed rounds over all rows (median)')
  parser.add_argument('--output', default=None, help='write JSON here')
  args = parser.parse_args(argv)
  if args.rounds < 1:
    raise ValueError(f'bad --rounds={args.rounds}: time at least 1 round')
  return args


def main(argv: Sequence[str]) -> None:
  args = parse_args(argv)
  variants = csv_values('--variants', args.variants, hyperprompt_config.VARIANTS)
  layouts = csv_values('--rows', args.rows, ROWS)
  shape, dtype = shape_from_args(args)
  _, peak_source = peak_flops_per_second(dtype, repeats=1)
  print(f'{describe(args.size, shape, dtype)}; MFU against {peak_source} '
        f'(timed before each row); medians of {args.rounds} rounds',
        flush=True)
  rows = [_compile_row(args.size, variant, layout, shape, dtype)
          for variant in variants for layout in layouts
          if measured(variant, layout)]
  # Rounds alternate the rows, so that load on a shared machine falls on
  # every row alike.
  for _ in range(args.rounds):
    for row in rows:
      _time_row(row, dtype, args.steps)
  results = [_result(row, shape) for row in rows]
  print(format_table(results))
  if args.output:
    with open(args.output, 'w') as f:
      json.dump({
          'backend': jax.default_backend(),
          'device_kind': jax.devices()[0].device_kind,
          'num_devices': jax.device_count(),
          'size': args.size, 'dtype': dtype, 'steps': args.steps,
          'rounds': args.rounds, **dataclasses.asdict(shape),
          'peak_source': peak_source,
          'results': [dataclasses.asdict(r) for r in results],
      }, f, indent=2)
    print(f'wrote {args.output}')


if __name__ == '__main__':
  gin_utils.run_main(main)
