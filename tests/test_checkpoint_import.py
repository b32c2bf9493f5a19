"""Importing T5.1.1 weights (HF safetensors, t5x) into HyperPrompt models."""

import functools

import jax
import ml_dtypes
import numpy as np
import pytest
from flax import traverse_util

from hyperprompt_jax import checkpoint_import
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


def test_read_safetensors_float32_and_bfloat16(tmp_path):
  tensors = {'a': np.arange(6, dtype=np.float32).reshape(2, 3),
             'b': np.array([1.5, -2.0], ml_dtypes.bfloat16)}
  write_safetensors(tmp_path / 'm.safetensors', tensors)
  read = checkpoint_import.read_safetensors(tmp_path / 'm.safetensors')
  assert read.keys() == tensors.keys()
  for name, value in tensors.items():
    assert read[name].dtype == value.dtype
    np.testing.assert_array_equal(read[name], value)


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
  from hyperprompt_jax import t5x_model  # pylint: disable=g-import-not-at-top
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
