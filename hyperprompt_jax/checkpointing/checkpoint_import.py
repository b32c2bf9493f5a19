"""Pretrained T5.1.1 weights into a HyperPrompt model, read slice by slice.

Two sources, both read without t5x or torch:
  * t5x checkpoints (`gs://t5-data/pretrained_models/t5x/t5_1_1_<size>/
    checkpoint_1000000` or a local copy): the msgpack file `checkpoint` whose
    large leaves are TensorStore (zarr) specs relative to its directory, or
    t5x's Orbax format (zarr arrays in an OCDBT store), both read through
    TensorStore.
  * Hugging Face safetensors in the `T5ForConditionalGeneration` layout of
    `google/t5-v1_1-<size>` (`model.safetensors`), read through `safetensors`.

Opening a checkpoint reads only its metadata: each leaf is a `LazyArray` in
t5x's minimal T5.1.1 layout, which is our backbone's. `restore_pretrained`
then reads, on each host, only the slices its devices hold in the model's
sharding, each converted to the model's dtype on its own, so no host ever
holds a float32 copy of the whole checkpoint. Every backbone parameter comes
from the checkpoint; the task-conditioning parameters keep their fresh
initial values. Checkpoints with unscanned layers (`layers_i`, the public
ones) restore into models with scanned layers (`T5Config.scan_layers`) and
the other way round: a scanned leaf reads the layers its slice covers.
"""

import collections
import copy
import dataclasses
import os
import re
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

from etils import epath
from flax import serialization
from flax import traverse_util
import jax
import numpy as np
import orbax.checkpoint as ocp
import safetensors
import tensorstore as ts

from hyperprompt_jax.checkpointing import scan_conversion
from hyperprompt_jax.sharding import partitioning

Params = Mapping[str, Any]
Index = Tuple[slice, ...]  # A device's shard of an array, as JAX gives it.


@dataclasses.dataclass(frozen=True)
class LazyArray:
  """A checkpoint array that is read one slice at a time.

  Attributes:
    shape: the array's shape in t5x's layout.
    read: index (one slice per axis) -> that part of the array as numpy, in
      the checkpoint's dtype.
  """
  shape: Tuple[int, ...]
  read: Callable[[Index], np.ndarray]

  @classmethod
  def of(cls, value) -> 'LazyArray':
    """An array already in memory (numpy or `jax.Array`)."""
    return cls(tuple(value.shape), lambda index: np.asarray(value[index]))

  def transposed(self) -> 'LazyArray':
    """This 2-D array transposed; a slice reads the transposed slice."""
    return LazyArray(self.shape[::-1], lambda index: self.read(index[::-1]).T)

  def numpy(self, dtype=np.float32) -> np.ndarray:
    """The whole array in `dtype`."""
    return np.asarray(self.read(whole(self.shape)), dtype)

  @classmethod
  def stacked(cls, layers: Sequence['LazyArray']) -> 'LazyArray':
    """Equal-shaped arrays stacked on a new leading axis (scanned layers);
    a slice reads only the layers it covers."""
    layers = [x if isinstance(x, LazyArray) else cls.of(x) for x in layers]
    def read(index):
      return np.stack([layers[i].read(index[1:])
                       for i in range(len(layers))[index[0]]])
    return cls((len(layers), *layers[0].shape), read)

  def layer(self, i: int) -> 'LazyArray':
    """Entry `i` of the leading (scanned layers) axis."""
    return LazyArray(self.shape[1:],
                     lambda index: self.read((slice(i, i + 1), *index))[0])


def whole(shape: Tuple[int, ...]) -> Index:
  """The index of a whole array of `shape`."""
  return tuple(slice(None) for _ in shape)


def materialize(params: Params, dtype=np.float32) -> Params:
  """A tree of `LazyArray`s read whole into numpy arrays of `dtype`."""
  return jax.tree.map(lambda x: x.numpy(dtype), params,
                      is_leaf=lambda x: isinstance(x, LazyArray))


# ---------------------- Hugging Face T5 key layout ----------------------------
# Sub-layer `j` of block `i` in HF is a named sub-module in t5x; the last
# sub-layer of a block is its MLP.
_HF_SUBLAYERS = {
    'encoder': ('attention', 'mlp'),
    'decoder': ('self_attention', 'encoder_decoder_attention', 'mlp'),
}
_HF_NORMS = {
    'encoder': ('pre_attention_layer_norm', 'pre_mlp_layer_norm'),
    'decoder': ('pre_self_attention_layer_norm',
                'pre_cross_attention_layer_norm', 'pre_mlp_layer_norm'),
}
_HF_ATTENTION_MODULES = ('SelfAttention', 'EncDecAttention')  # By sub-layer.
_HF_ATTENTION = {'q': 'query', 'k': 'key', 'v': 'value', 'o': 'out'}
_HF_PROJECTIONS = {v: k for k, v in _HF_ATTENTION.items()}
_HF_BLOCK = re.compile(
    r'(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.'
    r'(?:(?:SelfAttention|EncDecAttention)\.([qkvo])|DenseReluDense\.(wi_0|wi_1|wo)'
    r'|(layer_norm))\.weight')
_HF_RELPOS = '{}.block.0.layer.0.SelfAttention.relative_attention_bias.weight'
_HF_FINAL_NORM = '{}.final_layer_norm.weight'
_HF_FIXED = {  # t5x path -> HF key, for the parameters outside the blocks.
    ('token_embedder', 'embedding'): 'shared.weight',
    ('decoder', 'logits_dense', 'kernel'): 'lm_head.weight',
    **{(s, 'relpos_bias', 'rel_embedding'): _HF_RELPOS.format(s)
       for s in _HF_SUBLAYERS},
    **{(s, f'{s}_norm', 'scale'): _HF_FINAL_NORM.format(s)
       for s in _HF_SUBLAYERS},
}
_T5X_FIXED = {key: path for path, key in _HF_FIXED.items()}
# Input embeddings that HF ties to `shared.weight`.
_HF_TIED = ('encoder.embed_tokens.weight', 'decoder.embed_tokens.weight')


def transposed_in_hf(path: Tuple[str, ...]) -> bool:
  """torch `Linear` weights are `[out, in]`, t5x kernels `[in, out]`; HF's
  relative-position table is `[buckets, heads]`, t5x's `[heads, buckets]`."""
  return path[-1] in ('kernel', 'rel_embedding')


def _t5x_path(hf_key: str) -> Tuple[str, ...]:
  """The t5x param path of a HF T5.1.1 key."""
  if hf_key in _T5X_FIXED:
    return _T5X_FIXED[hf_key]
  if m := _HF_BLOCK.fullmatch(hf_key):
    stack, block, sublayer = m[1], f'layers_{int(m[2])}', int(m[3])
    mlp = len(_HF_SUBLAYERS[stack]) - 1
    if m[6] and sublayer <= mlp:
      return (stack, block, _HF_NORMS[stack][sublayer], 'scale')
    if m[4] and sublayer < mlp and _HF_ATTENTION_MODULES[sublayer] in hf_key:
      return (stack, block, _HF_SUBLAYERS[stack][sublayer],
              _HF_ATTENTION[m[4]], 'kernel')
    if m[5] and sublayer == mlp:
      return (stack, block, 'mlp', m[5], 'kernel')
  raise ValueError(
      f'Unexpected key {hf_key!r} in a Hugging Face T5 checkpoint: only the '
      'T5.1.1 layout (gated-GELU `wi_0`/`wi_1`, untied `lm_head`, as in '
      'google/t5-v1_1-base) can be imported.')


def hf_key(path: Tuple[str, ...]) -> str:
  """The HF `T5ForConditionalGeneration` key of a t5x backbone param path."""
  if path in _HF_FIXED:
    return _HF_FIXED[path]
  stack, block, module, *rest = path
  prefix = f'{stack}.block.{int(block[len("layers_"):])}.layer'
  if module in _HF_NORMS[stack]:
    return f'{prefix}.{_HF_NORMS[stack].index(module)}.layer_norm.weight'
  sublayer = _HF_SUBLAYERS[stack].index(module)
  if module == 'mlp':
    return f'{prefix}.{sublayer}.DenseReluDense.{rest[0]}.weight'
  return (f'{prefix}.{sublayer}.{_HF_ATTENTION_MODULES[sublayer]}.'
          f'{_HF_PROJECTIONS[rest[0]]}.weight')


def _same(a: LazyArray, b: LazyArray, rows: int = 4096) -> bool:
  """Whether two `[vocab, d]` arrays are equal, compared block by block."""
  if a.shape != b.shape:
    return False
  # safetensors slices do not clip to the array, unlike numpy's.
  blocks = [(slice(i, min(i + rows, a.shape[0])), slice(None))
            for i in range(0, a.shape[0], rows)]
  return all(np.array_equal(a.read(block), b.read(block)) for block in blocks)


def params_from_hf_arrays(tensors: Mapping[str, LazyArray]) -> Params:
  """HF `T5ForConditionalGeneration` (T5.1.1) arrays as t5x's tree.

  Args:
    tensors: HF key -> `LazyArray` in HF's layout.

  Returns:
    Nested `LazyArray`s in t5x's minimal T5.1.1 layout (transposed views
    where the layouts differ).
  """
  flat = {}
  for key, value in tensors.items():
    if key in _HF_TIED:
      if 'shared.weight' in tensors and not _same(value,
                                                  tensors['shared.weight']):
        raise ValueError(f'{key} differs from shared.weight: untied input '
                         'embeddings are not part of T5.1.1.')
      continue
    path = _t5x_path(key)
    flat[path] = value.transposed() if transposed_in_hf(path) else value
  return traverse_util.unflatten_dict(flat)


def params_from_hf_t5(tensors: Mapping[str, np.ndarray]) -> Params:
  """In-memory HF T5.1.1 tensors as t5x's tree of float32 numpy arrays."""
  return materialize(params_from_hf_arrays(
      {k: LazyArray.of(v) for k, v in tensors.items()}))


def open_safetensors(path: epath.PathLike) -> Dict[str, LazyArray]:
  """The tensors of a local `.safetensors` file; reading is per slice."""
  f = safetensors.safe_open(os.fspath(path), framework='numpy')

  def lazy(name):
    part = f.get_slice(name)
    return LazyArray(tuple(part.get_shape()), part.__getitem__)

  return {name: lazy(name) for name in f.keys()}


# ------------------------------ t5x checkpoints -------------------------------
def _tensorstore_array(spec: Dict[str, Any]) -> LazyArray:
  store = ts.open(spec, open=True).result()  # Reads the metadata only.
  return LazyArray(tuple(store.shape),
                   lambda index: store[index].read().result())


def resolve_spec(spec: Dict[str, Any], ckpt_dir: str) -> Dict[str, Any]:
  """A TensorStore spec as t5x stores it (path relative to its checkpoint
  directory) made absolute against `ckpt_dir` (local or `gs://`)."""
  spec = copy.deepcopy(spec)
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
  return spec


def _msgpack_spec(spec: Dict[str, Any], ckpt_dir: str) -> Dict[str, Any]:
  """A TensorStore spec saved by t5x, resolved against `ckpt_dir`, to read."""
  spec = resolve_spec(spec, ckpt_dir)
  # Like t5x: chunking and compression are read from the array itself.
  for key in ('chunks', 'compressor'):
    spec['metadata'].pop(key, None)
  return spec


def _open_msgpack_target(ckpt_file: epath.Path) -> Params:
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
      k: _tensorstore_array(_msgpack_spec(v, ckpt_dir)) if isinstance(
          v, dict) else LazyArray.of(v)  # Small leaves are stored inline.
      for k, v in flat.items()})


def _open_orbax_target(state_dir: epath.Path) -> Params:
  """`target` of t5x's Orbax format: zarr arrays named by their '.'-joined
  path, in an OCDBT key-value store when `manifest.ocdbt` exists."""
  metadata = ocp.PyTreeCheckpointer().metadata(state_dir).item_metadata
  base = os.fspath(state_dir)
  base = base if '://' in base else 'file://' + os.path.abspath(base)
  ocdbt = (state_dir / 'manifest.ocdbt').exists()

  def lazy(leaf):
    kvstore = ({'driver': 'ocdbt', 'base': base, 'path': leaf.name} if ocdbt
               else f'{base}/{leaf.name}')
    return _tensorstore_array({
        'driver': 'zarr3' if metadata.use_zarr3 else 'zarr',
        'kvstore': kvstore})

  return jax.tree.map(lazy, metadata.tree['target'])


def open_t5x_checkpoint(path: epath.PathLike) -> Params:
  """The model parameters (`target`) of a t5x checkpoint, as `LazyArray`s.

  Args:
    path: a t5x `checkpoint_<step>` directory (local or `gs://`), in t5x's
      msgpack + TensorStore format (the public T5.1.1 checkpoints) or in its
      Orbax format (what `t5x.train` writes by default); or the msgpack
      `checkpoint` file itself.
  """
  path = epath.Path(path)
  if (path / 'state' / '_METADATA').exists():
    return _open_orbax_target(path / 'state')
  if path.is_file() or (path / 'checkpoint').exists():
    return _open_msgpack_target(path if path.is_file() else
                                path / 'checkpoint')
  raise ValueError(f'No t5x checkpoint at {path}: pass a `checkpoint_<step>` '
                   'directory.')


def read_t5x_checkpoint(path: epath.PathLike) -> Params:
  """The model parameters of a t5x checkpoint, whole, as float32 numpy."""
  return materialize(open_t5x_checkpoint(path))


def open_pretrained(path: epath.PathLike) -> Params:
  """T5.1.1 params as `LazyArray`s from a `.safetensors` file, a HF model dir
  (holding `model.safetensors`) or a t5x checkpoint dir."""
  path = epath.Path(path)
  if path.is_dir() and (path / 'model.safetensors').exists():
    path = path / 'model.safetensors'
  if path.suffix == '.safetensors':
    if not path.exists():
      raise ValueError(f'No safetensors file at {path}.')
    return params_from_hf_arrays(open_safetensors(path))
  return open_t5x_checkpoint(path)


def load_pretrained_params(path: epath.PathLike) -> Params:
  """Like `open_pretrained`, read whole into float32 numpy arrays."""
  return materialize(open_pretrained(path))


# ------------------------------ merging ---------------------------------------
def _index_key(index: Index) -> Tuple[Tuple[Any, Any, Any], ...]:
  """A hashable form of an index (slices are unhashable before Python 3.12)."""
  return tuple((s.start, s.stop, s.step) for s in index)


def read_sharded(value: LazyArray, sharding: jax.sharding.Sharding,
                 dtype) -> jax.Array:
  """`value` as a `jax.Array` with `sharding`, reading only this host's part.

  Each distinct shard of this host's devices is read once (replicas share
  it), converted to `dtype` and copied to its devices.
  """
  devices_of = collections.defaultdict(list)
  indices = {}
  for device, index in sharding.addressable_devices_indices_map(
      value.shape).items():
    devices_of[_index_key(index)].append(device)
    indices[_index_key(index)] = index
  shards = []
  for key, devices in devices_of.items():
    shard = np.asarray(value.read(indices[key]), dtype)
    shards.extend(jax.device_put(shard, d) for d in devices)
  return jax.make_array_from_single_device_arrays(value.shape, sharding,
                                                  shards)


def read_like(value: LazyArray, init_value) -> Any:
  """`value` with the dtype of `init_value` and, for a `jax.Array`, its
  sharding (each host reads only its devices' slices, so this works
  multi-host)."""
  if isinstance(init_value, jax.Array):
    return read_sharded(value, init_value.sharding, init_value.dtype)
  return value.numpy(init_value.dtype)


def merge_pretrained(initial: Params, pretrained: Params) -> Params:
  """Backbone parameters from `pretrained`, the others from `initial`.

  Args:
    initial: the model's freshly initialised params (any HyperPrompt variant),
      numpy or (sharded) `jax.Array`s.
    pretrained: params of a T5.1.1 checkpoint of the same size, `LazyArray`s
      (from `open_pretrained`) or arrays (a HyperPrompt checkpoint also
      works: its conditioning parameters are kept). Its layers are scanned
      or unscanned as `initial`'s (`scan_conversion`), without reading them.

  Returns:
    A params tree with the structure, shapes, dtypes and shardings of
    `initial`.

  Raises:
    ValueError: a backbone parameter is missing from `pretrained`, a shape
      differs, or `pretrained` holds parameters the model does not have.
  """
  pretrained = scan_conversion.convert_like(
      pretrained, initial, stack_fn=LazyArray.stacked,
      unstack_fn=lambda x, i: (x if isinstance(x, LazyArray)
                               else LazyArray.of(x)).layer(i))
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
    if not isinstance(value, LazyArray):
      value = LazyArray.of(value)
    if value.shape != tuple(init_value.shape):
      raise ValueError(
          f'Parameter {name} has shape {value.shape} in the checkpoint '
          f'but {tuple(init_value.shape)} in the model; use the model size '
          'the checkpoint was trained with.')
    merged[path] = read_like(value, init_value)
  return traverse_util.unflatten_dict(merged)


def restore_pretrained(initial: Params, path: epath.PathLike) -> Params:
  """`initial` params with the backbone from the T5.1.1 checkpoint at `path`.

  Args:
    initial: freshly initialised params of a HyperPrompt model; for sharded
      `jax.Array`s each host reads only the slices its devices hold.
    path: a t5x checkpoint directory (e.g. the public
      `gs://t5-data/pretrained_models/t5x/t5_1_1_base/checkpoint_1000000`),
      a `.safetensors` file, or a HF model directory holding one.
  """
  return merge_pretrained(initial, open_pretrained(path))
