"""Pretrained T5.1.1 weights into a HyperPrompt model.

Two sources, both read without t5x or torch:
  * t5x checkpoints (`gs://t5-data/pretrained_models/t5x/t5_1_1_<size>/
    checkpoint_1000000` or a local copy): a msgpack file `checkpoint` whose
    large leaves are TensorStore (zarr) specs relative to its directory.
  * Hugging Face safetensors in the `T5ForConditionalGeneration` layout of
    `google/t5-v1_1-<size>` (`model.safetensors`).

Both give a params tree in t5x's minimal T5.1.1 layout, which is our
backbone's. `merge_pretrained` then puts it into a freshly initialised
HyperPrompt params tree: every backbone parameter comes from the checkpoint,
the task-conditioning parameters keep their fresh initial values.
"""

import copy
import json
import os
import re
import struct
from typing import Any, Dict, Mapping, Tuple

from etils import epath
from flax import serialization
from flax import traverse_util
import jax
import ml_dtypes
import numpy as np

from hyperprompt_jax import partitioning

Params = Mapping[str, Any]

# ------------------------------ safetensors -----------------------------------
# Format (https://github.com/huggingface/safetensors): an 8-byte little-endian
# header length N, N bytes of JSON `{name: {dtype, shape, data_offsets}}`
# (offsets relative to the data after the header), then the raw tensors.
_SAFETENSORS_DTYPES = {
    'F64': np.float64, 'F32': np.float32, 'F16': np.float16,
    'BF16': ml_dtypes.bfloat16, 'I64': np.int64, 'I32': np.int32,
    'I16': np.int16, 'I8': np.int8, 'U8': np.uint8, 'BOOL': np.bool_,
}


def read_safetensors(path: epath.PathLike) -> Dict[str, np.ndarray]:
  """Reads every tensor of a `.safetensors` file into numpy arrays."""
  data = epath.Path(path).read_bytes()
  (header_len,) = struct.unpack('<Q', data[:8])
  header = json.loads(data[8:8 + header_len])
  header.pop('__metadata__', None)
  body = memoryview(data)[8 + header_len:]
  tensors = {}
  for name, info in header.items():
    if info['dtype'] not in _SAFETENSORS_DTYPES:
      raise ValueError(f'{path}: tensor {name!r} has unsupported dtype '
                       f'{info["dtype"]}; convert the file to F32 or BF16.')
    begin, end = info['data_offsets']
    tensors[name] = np.frombuffer(
        body[begin:end], dtype=_SAFETENSORS_DTYPES[info['dtype']]).reshape(
            info['shape'])
  return tensors


# ---------------------- Hugging Face T5 key layout ----------------------------
# Sub-layer `j` of block `i` in HF is a named sub-module in t5x.
_HF_SUBLAYERS = {
    'encoder': ('attention', 'mlp'),
    'decoder': ('self_attention', 'encoder_decoder_attention', 'mlp'),
}
_HF_NORMS = {
    'encoder': ('pre_attention_layer_norm', 'pre_mlp_layer_norm'),
    'decoder': ('pre_self_attention_layer_norm',
                'pre_cross_attention_layer_norm', 'pre_mlp_layer_norm'),
}
_HF_ATTENTION = {'q': 'query', 'k': 'key', 'v': 'value', 'o': 'out'}
_HF_BLOCK = re.compile(
    r'(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.'
    r'(?:(?:SelfAttention|EncDecAttention)\.([qkvo])|DenseReluDense\.(wi_0|wi_1|wo)'
    r'|(layer_norm))\.weight')
_HF_RELPOS = re.compile(
    r'(encoder|decoder)\.block\.0\.layer\.0\.SelfAttention\.'
    r'relative_attention_bias\.weight')
_HF_FINAL_NORM = re.compile(r'(encoder|decoder)\.final_layer_norm\.weight')
# Input embeddings that HF ties to `shared.weight`.
_HF_TIED = ('encoder.embed_tokens.weight', 'decoder.embed_tokens.weight')


def _t5x_path(hf_key: str) -> Tuple[Tuple[str, ...], bool]:
  """Maps a HF T5.1.1 key to (t5x param path, whether to transpose).

  torch `Linear` weights are `[out, in]`; t5x kernels are `[in, out]`. HF's
  relative-position table is `[buckets, heads]`, t5x's `[heads, buckets]`.
  """
  if hf_key == 'shared.weight':
    return ('token_embedder', 'embedding'), False
  if hf_key == 'lm_head.weight':
    return ('decoder', 'logits_dense', 'kernel'), True
  if m := _HF_RELPOS.fullmatch(hf_key):
    return (m[1], 'relpos_bias', 'rel_embedding'), True
  if m := _HF_FINAL_NORM.fullmatch(hf_key):
    return (m[1], f'{m[1]}_norm', 'scale'), False
  if m := _HF_BLOCK.fullmatch(hf_key):
    stack, block, sublayer = m[1], f'layers_{int(m[2])}', int(m[3])
    num_sublayers = len(_HF_SUBLAYERS[stack])  # The last one is the MLP.
    if m[6] and sublayer < num_sublayers:
      return (stack, block, _HF_NORMS[stack][sublayer], 'scale'), False
    if m[4] and sublayer < num_sublayers - 1:
      return (stack, block, _HF_SUBLAYERS[stack][sublayer],
              _HF_ATTENTION[m[4]], 'kernel'), True
    if m[5] and sublayer == num_sublayers - 1:
      return (stack, block, 'mlp', m[5], 'kernel'), True
  raise ValueError(
      f'Unexpected key {hf_key!r} in a Hugging Face T5 checkpoint: only the '
      'T5.1.1 layout (gated-GELU `wi_0`/`wi_1`, untied `lm_head`, as in '
      'google/t5-v1_1-base) can be imported.')


def params_from_hf_t5(tensors: Mapping[str, np.ndarray]) -> Params:
  """Converts HF `T5ForConditionalGeneration` (T5.1.1) tensors to t5x's tree.

  Args:
    tensors: HF key -> array, e.g. from `read_safetensors`.

  Returns:
    Nested params in t5x's minimal T5.1.1 layout, all float32.
  """
  flat = {}
  for key, value in tensors.items():
    if key in _HF_TIED:
      if 'shared.weight' in tensors and not np.array_equal(
          value, tensors['shared.weight']):
        raise ValueError(f'{key} differs from shared.weight: untied input '
                         'embeddings are not part of T5.1.1.')
      continue
    path, transpose = _t5x_path(key)
    value = np.asarray(value, np.float32)
    flat[path] = value.T if transpose else value
  return traverse_util.unflatten_dict(flat)


# ------------------------------ t5x checkpoints -------------------------------
def _read_tensorstore(spec: Dict[str, Any], ckpt_dir: str) -> np.ndarray:
  """Reads one array whose TensorStore spec is relative to `ckpt_dir`."""
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  spec = copy.deepcopy(spec)
  # Like t5x: chunking and compression are read from the array itself.
  for key in ('chunks', 'compressor'):
    spec['metadata'].pop(key, None)
  kvstore = spec['kvstore']
  if m := re.fullmatch(r'gs://([^/]*)/(.*)', ckpt_dir):
    kvstore.update(driver='gcs', bucket=m[1])
    ckpt_dir = m[2]
  elif kvstore['driver'] == 'gcs':  # A GCS checkpoint copied locally.
    kvstore.pop('bucket')
    kvstore['driver'] = 'file'
  # tensorstore < 0.1.14 wrote the relative path outside the kvstore.
  holder = kvstore if 'path' in kvstore else spec
  holder['path'] = os.path.join(ckpt_dir, holder['path'])
  return ts.open(spec, open=True).result().read().result()


def _read_msgpack_target(ckpt_file: epath.Path) -> Params:
  """`target` of t5x's msgpack + TensorStore format (the public checkpoints)."""
  contents = serialization.msgpack_restore(ckpt_file.read_bytes())
  if 'optimizer' not in contents:
    raise ValueError(f'{ckpt_file} is not a t5x checkpoint of version >= 2 '
                     '(no `optimizer` entry).')
  ckpt_dir = os.fspath(ckpt_file.parent)
  flat = traverse_util.flatten_dict(
      contents['optimizer']['target'],
      is_leaf=lambda _, v: 'driver' in v and 'metadata' in v)  # A spec.
  return traverse_util.unflatten_dict({
      k: _read_tensorstore(v, ckpt_dir) if isinstance(v, dict) else v
      for k, v in flat.items()})


def read_t5x_checkpoint(path: epath.PathLike) -> Params:
  """Reads the model parameters (`target`) of a t5x checkpoint as numpy.

  Args:
    path: a t5x `checkpoint_<step>` directory (local or `gs://`), in t5x's
      msgpack + TensorStore format (the public T5.1.1 checkpoints) or in its
      Orbax format (what `t5x.train` writes by default); or the msgpack
      `checkpoint` file itself.

  Returns:
    The nested params tree as saved (t5x's param names), float32.
  """
  path = epath.Path(path)
  if (path / 'state' / '_METADATA').exists():
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    target = ocp.PyTreeCheckpointer().restore(os.fspath(path / 'state'))[
        'target']
  elif path.is_file() or (path / 'checkpoint').exists():
    target = _read_msgpack_target(path if path.is_file() else
                                  path / 'checkpoint')
  else:
    raise ValueError(f'No t5x checkpoint at {path}: pass a `checkpoint_<step>` '
                     'directory.')
  return jax.tree.map(lambda x: np.asarray(x, np.float32), target)


def load_pretrained_params(path: epath.PathLike) -> Params:
  """T5.1.1 params from a `.safetensors` file, a HF model dir or a t5x one."""
  path = epath.Path(path)
  if path.is_dir() and (path / 'model.safetensors').exists():
    path = path / 'model.safetensors'
  if path.suffix == '.safetensors':
    return params_from_hf_t5(read_safetensors(path))
  return read_t5x_checkpoint(path)


# ------------------------------ merging ---------------------------------------
def _like(value: np.ndarray, init_value) -> Any:
  """`value` with the dtype of `init_value` and, for a `jax.Array`, its
  sharding (each device reads only its own slice, so this works multi-host).
  """
  value = np.asarray(value, init_value.dtype)
  if isinstance(init_value, jax.Array):
    return jax.make_array_from_callback(value.shape, init_value.sharding,
                                        lambda index: value[index])
  return value


def merge_pretrained(initial: Params, pretrained: Params) -> Params:
  """Backbone parameters from `pretrained`, the others from `initial`.

  Args:
    initial: the model's freshly initialised params (any HyperPrompt variant),
      numpy or (sharded) `jax.Array`s.
    pretrained: params of a T5.1.1 checkpoint of the same size (a HyperPrompt
      checkpoint also works: its conditioning parameters are kept).

  Returns:
    A params tree with the structure, shapes, dtypes and shardings of
    `initial`.

  Raises:
    ValueError: a backbone parameter is missing from `pretrained`, a shape
      differs, or `pretrained` holds parameters the model does not have.
  """
  init_flat = traverse_util.flatten_dict(initial)
  ckpt_flat = traverse_util.flatten_dict(pretrained)
  unexpected = sorted('/'.join(k) for k in ckpt_flat.keys() - init_flat.keys())
  if unexpected:
    raise ValueError(
        f'The checkpoint has {len(unexpected)} parameters the model lacks '
        f'(first: {unexpected[0]}); check the model size and variant.')
  merged = {}
  for path, init_value in init_flat.items():
    name = '/'.join(path)
    if path not in ckpt_flat:
      if not partitioning.is_conditioning_param(path):
        raise ValueError(f'The checkpoint lacks backbone parameter {name}; '
                         'is it a T5.1.1 checkpoint with as many layers?')
      merged[path] = init_value
      continue
    value = ckpt_flat[path]
    if tuple(value.shape) != tuple(init_value.shape):
      raise ValueError(
          f'Parameter {name} has shape {tuple(value.shape)} in the checkpoint '
          f'but {tuple(init_value.shape)} in the model; use the model size '
          'the checkpoint was trained with.')
    merged[path] = _like(value, init_value)
  return traverse_util.unflatten_dict(merged)


def restore_pretrained(initial: Params, path: epath.PathLike) -> Params:
  """`initial` params with the backbone from the T5.1.1 checkpoint at `path`.

  Args:
    initial: freshly initialised params of a HyperPrompt model.
    path: a t5x checkpoint directory (e.g. the public
      `gs://t5-data/pretrained_models/t5x/t5_1_1_base/checkpoint_1000000`),
      a `.safetensors` file, or a HF model directory holding one.
  """
  return merge_pretrained(initial, load_pretrained_params(path))
