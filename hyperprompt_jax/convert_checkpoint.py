"""A checkpoint rewritten as a t5x checkpoint with scanned or unscanned layers.

`python -m t5x.train` restores a checkpoint only into the same layer layout,
so a run with `T5Config.scan_layers` starts from the public T5.1.1
checkpoints (unscanned `layers_i`) through a converted copy, and a scanned
run's checkpoint goes back to the unscanned layout the same way:

  python -m hyperprompt_jax.convert_checkpoint --layers=scanned \\
    --input=gs://t5-data/pretrained_models/t5x/t5_1_1_xxl/checkpoint_1000000 \\
    --output=gs://my-bucket/t5_1_1_xxl_scanned/checkpoint_1000000

The input is anything `checkpoint_import.open_pretrained` reads (t5x's
msgpack + TensorStore and Orbax formats, Hugging Face safetensors). The
output is in t5x's msgpack + TensorStore format, the public checkpoints':
its `target` holds every parameter of the input (layer stacks converted,
leaves bit for bit) and its `state` the step of the input's
`checkpoint_<step>` name (0 for safetensors). It holds no optimizer state:
t5x initialises that under `RestoreCheckpointConfig.fallback_to_scratch`,
which `gin/t5x/runs/hyperprompt.gin` sets, as our own trainer does for
`PRETRAINED_CHECKPOINT`. Each leaf is read and written one block of rows at
a time (at most one layer of a stacked leaf), so memory stays small at XXL.
"""

import argparse
import os
import re
from typing import Any, Dict, Sequence

from etils import epath
from flax import serialization
from flax import traverse_util
import numpy as np
import tensorstore as ts

from hyperprompt_jax.checkpointing import checkpoint_import
from hyperprompt_jax.checkpointing import scan_conversion
from hyperprompt_jax import gin_utils

LazyArray = checkpoint_import.LazyArray
LAYOUTS = ('scanned', 'unscanned')
T5X_VERSION = 3  # t5x's `checkpoints.VERSION`, which its restore checks.
_BLOCK_BYTES = 64 << 20  # Rows read and written at a time, at most.


def convert_layers(params, layers: str):
  """`params` (`LazyArray` leaves) with every stack's layers `layers`."""
  if layers == 'scanned':
    return scan_conversion.scan_params(params, stack_fn=LazyArray.stacked)
  if layers == 'unscanned':
    return scan_conversion.unscan_params(
        params, unstack_fn=lambda leaf, i: leaf.layer(i))
  raise ValueError(f'Unknown layer layout {layers!r}; use one of '
                   f'{", ".join(LAYOUTS)}.')


def checkpoint_step(path: epath.PathLike) -> int:
  """The step in a t5x `checkpoint_<step>` path (its directory or msgpack
  file), as t5x names them; 0 for anything else (safetensors)."""
  path = epath.Path(path)
  name = path.parent.name if path.name == 'checkpoint' else path.name
  match = re.fullmatch(r'checkpoint_(\d+)', name)
  return int(match[1]) if match else 0


def _rows_per_block(shape: Sequence[int], itemsize: int) -> int:
  row_bytes = itemsize * int(np.prod(shape[1:], dtype=np.int64))
  return max(1, min(shape[0], _BLOCK_BYTES // max(row_bytes, 1)))


def _write_leaf(value: LazyArray, name: str, ckpt_dir: str) -> Dict[str, Any]:
  """Writes one leaf as t5x does (zarr, gzip) and returns its spec, with the
  path relative to `ckpt_dir` as t5x stores it."""
  shape = value.shape
  # Itemsize of the checkpoint's dtype, from one element.
  first = value.read(tuple(slice(0, 1) for _ in shape))
  rows = _rows_per_block(shape, first.dtype.itemsize)
  spec = {
      'driver': 'zarr', 'dtype': first.dtype.name,
      'kvstore': {'driver': 'file', 'path': name.replace('/', '.')},
      'metadata': {'shape': list(shape), 'chunks': [rows, *shape[1:]],
                   'compressor': {'id': 'gzip'}},
  }
  store = ts.open(checkpoint_import.resolve_spec(spec, ckpt_dir), create=True,
                  delete_existing=True).result()
  rest = tuple(slice(None) for _ in shape[1:])
  for start in range(0, shape[0], rows):
    block = (slice(start, min(start + rows, shape[0])), *rest)
    store[block].write(value.read(block)).result()
  return spec


def write_t5x_checkpoint(params, step: int, path: epath.PathLike) -> None:
  """Writes `params` (`LazyArray` leaves) and `step` as a t5x checkpoint
  directory `path` (local or `gs://`)."""
  path = epath.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  ckpt_dir = os.fspath(path)
  flat = traverse_util.flatten_dict(params)
  target = traverse_util.unflatten_dict({
      key: _write_leaf(value, '/'.join(('target', *key)), ckpt_dir)
      for key, value in flat.items()})
  contents = {'version': T5X_VERSION,
              'optimizer': {'target': target,
                            'state': {'step': np.asarray(step, np.int32)}}}
  # The msgpack file last: a checkpoint without it is visibly incomplete.
  (path / 'checkpoint').write_bytes(serialization.msgpack_serialize(contents))


def convert(input_path: epath.PathLike, output_path: epath.PathLike,
            layers: str) -> int:
  """Writes `input_path`'s parameters with `layers` layout to `output_path`
  (a t5x checkpoint); returns the step it carries."""
  params = convert_layers(checkpoint_import.open_pretrained(input_path),
                          layers)
  step = checkpoint_step(input_path)
  write_t5x_checkpoint(params, step, output_path)
  return step


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = gin_utils.command_parser('convert_checkpoint', __doc__)
  parser.add_argument('--input', required=True,
                      help='t5x checkpoint_<step> directory or safetensors')
  parser.add_argument('--output', required=True,
                      help='checkpoint_<step> directory to write')
  parser.add_argument('--layers', required=True, choices=LAYOUTS,
                      help='layer layout of the output')
  return parser.parse_args(argv)


def main(argv: Sequence[str]) -> None:
  args = parse_args(argv)
  step = convert(args.input, args.output, args.layers)
  print(f'Wrote {args.input} (step {step}) with {args.layers} layers to '
        f'{args.output}')


if __name__ == '__main__':
  gin_utils.run_main(main)
