"""Importing T5.1.1 weights (HF safetensors, t5x) into HyperPrompt models."""

import collections
import functools
import os
import subprocess
import sys
import textwrap

import jax
import ml_dtypes
import numpy as np
import pytest
from flax import serialization
from flax import traverse_util
import orbax.checkpoint as ocp
import tensorstore as ts

from hyperprompt_jax.checkpointing import checkpoint_import
from hf_t5_files import hf_t5_tensors
from hf_t5_files import write_safetensors
import tiny_models

@functools.cache
def _initial_params(variant):
  """Stand-in initial params: the network's tree, random values (fast)."""
  module = tiny_models.transformer(variant)
  shapes = jax.eval_shape(
      lambda: tiny_models.init_params(module, tiny_models.unpacked_batch()))
  rng = np.random.default_rng(1)
  return jax.tree.map(
      lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)


def test_safetensors_are_read_per_slice_in_their_dtype(tmp_path):
  tensors = {'a': np.arange(12, dtype=np.float32).reshape(3, 4),
             'b': np.array([1.5, -2.0, 3.0], ml_dtypes.bfloat16)}
  write_safetensors(tmp_path / 'm.safetensors', tensors)
  arrays = checkpoint_import.open_safetensors(tmp_path / 'm.safetensors')
  assert arrays.keys() == tensors.keys()
  part = arrays['a'].read((slice(1, 3), slice(2, 4)))
  np.testing.assert_array_equal(part, tensors['a'][1:3, 2:4])
  # A transposed view reads the transposed slice of the file.
  np.testing.assert_array_equal(
      arrays['a'].transposed().read((slice(2, 4), slice(0, 1))),
      tensors['a'][0:1, 2:4].T)
  b = arrays['b'].read((slice(1, None),))
  assert b.dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(b, tensors['b'][1:])


def test_hf_keys_and_t5x_paths_are_inverse():
  paths = traverse_util.flatten_dict(_initial_params('none'))
  keys = {checkpoint_import.hf_key(p): p for p in paths}
  assert keys.keys() == hf_t5_tensors().keys()
  tree = checkpoint_import.params_from_hf_arrays(
      {k: checkpoint_import.LazyArray((1,), None) for k in keys})
  assert set(traverse_util.flatten_dict(tree)) == set(paths)


def test_hf_import_has_the_exact_tree_of_our_network(tmp_path):
  hf = hf_t5_tensors()
  hf['encoder.embed_tokens.weight'] = hf['shared.weight']  # Tied copy.
  write_safetensors(tmp_path / 'model.safetensors', hf)
  imported = checkpoint_import.load_pretrained_params(tmp_path)
  flat = traverse_util.flatten_dict(imported)
  expected = traverse_util.flatten_dict(_initial_params('none'))
  assert {k: v.shape for k, v in flat.items()} == {
      k: v.shape for k, v in expected.items()}
  # torch Linear weights are [out, in]; t5x kernels [in, out].
  np.testing.assert_array_equal(
      imported['decoder']['layers_1']['encoder_decoder_attention']['key'][
          'kernel'], hf['decoder.block.1.layer.1.EncDecAttention.k.weight'].T)
  np.testing.assert_array_equal(
      imported['encoder']['layers_0']['mlp']['wo']['kernel'],
      hf['encoder.block.0.layer.1.DenseReluDense.wo.weight'].T)
  np.testing.assert_array_equal(
      imported['decoder']['layers_1']['pre_mlp_layer_norm']['scale'],
      hf['decoder.block.1.layer.2.layer_norm.weight'])
  np.testing.assert_array_equal(
      imported['encoder']['relpos_bias']['rel_embedding'],
      hf['encoder.block.0.layer.0.SelfAttention.relative_attention_bias.'
         'weight'].T)
  np.testing.assert_array_equal(imported['decoder']['logits_dense']['kernel'],
                                hf['lm_head.weight'].T)


@pytest.mark.parametrize('variant', ['global', 'prompt_tuning'])
def test_restore_keeps_backbone_from_checkpoint_and_fresh_prompts(
    tmp_path, variant):
  write_safetensors(tmp_path / 'model.safetensors', hf_t5_tensors())
  initial = _initial_params(variant)
  restored = checkpoint_import.restore_pretrained(
      initial, tmp_path / 'model.safetensors')
  pretrained = traverse_util.flatten_dict(
      checkpoint_import.load_pretrained_params(tmp_path))
  init_flat = traverse_util.flatten_dict(initial)
  restored_flat = traverse_util.flatten_dict(restored)
  assert restored_flat.keys() == init_flat.keys()
  conditioning = init_flat.keys() - pretrained.keys()
  assert conditioning and all(
      {'hyperprompt', 'input_prompt'} & set(path) for path in conditioning)
  for path, value in restored_flat.items():
    source = init_flat if path in conditioning else pretrained
    np.testing.assert_array_equal(value, source[path])


@pytest.mark.parametrize('edit, message', [
    (lambda t: t.update({'encoder.block.0.layer.1.DenseReluDense.wi.weight':
                         np.zeros((24, 16), np.float32)}), 'T5.1.1 layout'),
    (lambda t: t.pop('decoder.block.1.layer.1.EncDecAttention.v.weight'),
     'lacks backbone parameter decoder/layers_1/encoder_decoder_attention/'
     'value/kernel'),
    (lambda t: t.update(hf_t5_tensors(d_ff=32)), r'shape \(16, 32\).*\(16, 24\)'),
    (lambda t: t.update(hf_t5_tensors(num_layers=3)),
     'parameters the model lacks'),
    (lambda t: t.update({'encoder.embed_tokens.weight': np.zeros(
        (tiny_models.VOCAB, 16), np.float32)}), 'differs from shared.weight'),
])
def test_mismatched_checkpoints_give_a_clear_error(tmp_path, edit, message):
  tensors = hf_t5_tensors()
  edit(tensors)
  write_safetensors(tmp_path / 'model.safetensors', tensors)
  with pytest.raises(ValueError, match=message):
    checkpoint_import.restore_pretrained(_initial_params('global'), tmp_path)


def test_missing_t5x_checkpoint_names_the_path(tmp_path):
  with pytest.raises(ValueError, match='No t5x checkpoint at .*checkpoint_<step>'):
    checkpoint_import.load_pretrained_params(tmp_path)


@pytest.mark.t5x
def test_reads_t5x_msgpack_checkpoints_into_a_hyperprompt_model(tmp_path):
  """t5x's own writer of the public checkpoints' format, then our reader."""
  from t5x import adafactor  # pylint: disable=g-import-not-at-top
  from t5x import checkpoints  # pylint: disable=g-import-not-at-top
  from t5x import partitioning as t5x_partitioning  # pylint: disable=g-import-not-at-top
  from t5x import train_state  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  from hyperprompt_jax.t5x_integration import model as t5x_model  # pylint: disable=g-import-not-at-top
  vocab = seqio.PassThroughVocabulary(tiny_models.VOCAB)
  model = t5x_model.HyperPromptEncoderDecoderModel(
      tiny_models.transformer('none'), vocab, vocab, adafactor.Adafactor())
  batch = tiny_models.unpacked_batch()
  variables = model.get_initial_variables(
      jax.random.PRNGKey(0), {k: v.shape for k, v in batch.items()})
  state = train_state.FlaxOptimTrainState.create(model.optimizer_def, variables)
  checkpoints.Checkpointer(
      state, t5x_partitioning.PjitPartitioner(num_partitions=1),
      str(tmp_path)).save(state)
  saved = traverse_util.flatten_dict(jax.tree.map(np.asarray,
                                                  variables['params']))
  read = traverse_util.flatten_dict(
      checkpoint_import.read_t5x_checkpoint(tmp_path / 'checkpoint_0'))
  assert read.keys() == saved.keys()
  for path, value in saved.items():
    np.testing.assert_array_equal(read[path], value)
  restored = traverse_util.flatten_dict(checkpoint_import.restore_pretrained(
      _initial_params('global'), tmp_path / 'checkpoint_0'))
  for path, value in saved.items():
    np.testing.assert_array_equal(restored[path], value)


def test_restore_keeps_the_sharding_of_jax_array_params(tmp_path):
  write_safetensors(tmp_path / 'model.safetensors', hf_t5_tensors())
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  initial = jax.device_put(_initial_params('global'), sharding)
  restored = checkpoint_import.restore_pretrained(initial, tmp_path)
  leaves = jax.tree.leaves(restored)
  assert all(isinstance(x, jax.Array) and x.sharding == sharding
             for x in leaves)
  np.testing.assert_array_equal(
      restored['token_embedder']['embedding'],
      hf_t5_tensors()['shared.weight'])


def write_t5x_msgpack_checkpoint(directory, params, dtype=ml_dtypes.bfloat16):
  """t5x's format of the public checkpoints: msgpack `checkpoint` whose 2-D
  leaves are zarr arrays (in `dtype`) named by relative TensorStore specs."""
  os.makedirs(directory)

  def leaf(path, value):
    if value.ndim < 2:
      return value  # Stored inline, as t5x does with small arrays.
    name = 'target.' + '.'.join(path)
    metadata = {'shape': list(value.shape), 'chunks': [4, 4],
                'dtype': np.dtype(dtype).str if dtype != ml_dtypes.bfloat16
                else 'bfloat16', 'compressor': {'id': 'gzip'}}
    spec = {'driver': 'zarr', 'metadata': metadata,
            'kvstore': {'driver': 'file', 'path': name}}
    store = ts.open({**spec, 'kvstore': {
        'driver': 'file', 'path': os.path.join(directory, name)}},
                    create=True).result()
    store.write(value.astype(dtype)).result()
    return spec

  target = traverse_util.unflatten_dict({
      path: leaf(path, value)
      for path, value in traverse_util.flatten_dict(params).items()})
  with open(os.path.join(directory, 'checkpoint'), 'wb') as f:
    f.write(serialization.msgpack_serialize(
        {'version': 3, 'optimizer': {'target': target, 'state': {'step': 0}}}))


def _bf16_rounded(params):
  return jax.tree.map(
      lambda x: np.asarray(x, ml_dtypes.bfloat16).astype(np.float32)
      if x.ndim == 2 else x, params)


def test_reads_t5x_msgpack_tensorstore_checkpoints_per_slice(tmp_path):
  params = checkpoint_import.params_from_hf_t5(hf_t5_tensors())
  write_t5x_msgpack_checkpoint(tmp_path / 'checkpoint_0', params)
  opened = checkpoint_import.open_t5x_checkpoint(tmp_path / 'checkpoint_0')
  kernel = opened['encoder']['layers_0']['mlp']['wi_0']['kernel']
  assert kernel.read((slice(2, 4), slice(None))).shape == (2, 24)
  read = traverse_util.flatten_dict(
      checkpoint_import.read_t5x_checkpoint(tmp_path / 'checkpoint_0'))
  expected = traverse_util.flatten_dict(_bf16_rounded(params))
  assert read.keys() == expected.keys()
  for path, value in expected.items():
    assert read[path].dtype == np.float32
    np.testing.assert_array_equal(read[path], value)


def test_reads_t5x_orbax_checkpoints(tmp_path):
  params = checkpoint_import.params_from_hf_t5(hf_t5_tensors())
  ocp.PyTreeCheckpointer().save(
      tmp_path / 'checkpoint_2' / 'state',
      {'target': params, 'state': {'step': np.int32(2)}})
  read = traverse_util.flatten_dict(
      checkpoint_import.read_t5x_checkpoint(tmp_path / 'checkpoint_2'))
  expected = traverse_util.flatten_dict(params)
  assert read.keys() == expected.keys()
  for path, value in expected.items():
    np.testing.assert_array_equal(read[path], value)


def sharded_restore_reads_only_device_shards(directory):
  """On 2 devices: every source, sharded restore, reads recorded per param."""
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 2
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('x',))

  def spec(path, value):
    if path[0] == 'token_embedder' or value.shape[-1] % 2:
      return P()  # Replicated: read once, not once per device.
    return P(*[None] * (value.ndim - 1), 'x')  # Kernels: transposed in HF.

  initial = {path: jax.device_put(value, NamedSharding(mesh, spec(path, value)))
             for path, value in traverse_util.flatten_dict(
                 _initial_params('global')).items()}
  tensors = hf_t5_tensors()
  write_safetensors(os.path.join(directory, 'model.safetensors'), tensors)
  params = checkpoint_import.params_from_hf_t5(tensors)
  write_t5x_msgpack_checkpoint(os.path.join(directory, 'checkpoint_0'), params)
  for source, expected in ((directory, params), (
      os.path.join(directory, 'checkpoint_0'), _bf16_rounded(params))):
    reads = collections.defaultdict(list)

    def recorded(path, value):
      def read(index):
        reads[path].append(index)
        return value.read(index)
      return checkpoint_import.LazyArray(value.shape, read)

    opened = traverse_util.flatten_dict(
        checkpoint_import.open_pretrained(source),
        is_leaf=lambda _, v: isinstance(v, checkpoint_import.LazyArray))
    restored = traverse_util.flatten_dict(checkpoint_import.merge_pretrained(
        traverse_util.unflatten_dict(initial),
        traverse_util.unflatten_dict(
            {p: recorded(p, v) for p, v in opened.items()})))
    expected = traverse_util.flatten_dict(expected)
    assert reads.keys() == expected.keys()
    for path, value in expected.items():
      sharding = initial[path].sharding
      shards = {str(i) for i in sharding.devices_indices_map(
          value.shape).values()}
      assert sorted(map(str, reads[path])) == sorted(shards), path
      read_size = sum(np.empty(value.shape)[i].size for i in reads[path])
      assert read_size == value.size, path  # Each element once.
      if sharding.spec != P():
        assert max(np.empty(value.shape)[i].size
                   for i in reads[path]) == value.size // 2, path
      assert restored[path].sharding == sharding
      np.testing.assert_array_equal(np.asarray(restored[path]), value, path)


_TWO_DEVICES = textwrap.dedent("""
    import sys
    sys.path[:0] = {tests!r}
    import test_checkpoint_import as t
    t.sharded_restore_reads_only_device_shards({directory!r})
""")


def test_sharded_restore_reads_only_each_devices_part(tmp_path):
  env = dict(os.environ, XLA_FLAGS=os.environ.get('XLA_FLAGS', '') +
             ' --xla_force_host_platform_device_count=2',
             JAX_PLATFORMS='cpu')
  result = subprocess.run(
      [sys.executable, '-c', _TWO_DEVICES.format(
          tests=tiny_models.script_path(__file__), directory=str(tmp_path))],
      env=env, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-3000:]
