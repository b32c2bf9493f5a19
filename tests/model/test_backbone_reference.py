"""Our T5.1.1 backbone against Hugging Face transformers' PyTorch T5.

fixtures/hf_t5_tiny_golden.npz holds the weights, inputs, outputs and
relative position buckets of a tiny random T5.1.1 as transformers' PyTorch
`T5ForConditionalGeneration` computed them (fixtures/make_hf_t5_golden.py
says how to regenerate it). These tests read it with numpy alone; the test
marked `hf` runs transformers itself where it is installed.

transformers masks padded keys only, our network padded queries as well, so
outputs are compared where the inputs (encoder) or targets (decoder) are real:
the positions the loss reads.
"""

import functools
import json
import pathlib

import jax
import numpy as np
import pytest

from hf_t5_files import write_safetensors
from hyperprompt_jax.checkpointing import checkpoint_import
from hyperprompt_jax import export_hf
from hyperprompt_jax.layers import relative_position
import tiny_models

FIXTURE = pathlib.Path(__file__).parents[1] / 'fixtures' / 'hf_t5_tiny_golden.npz'
_TOKENS = ('encoder_input_tokens', 'decoder_input_tokens',
           'decoder_target_tokens')
_TOLERANCE = dict(atol=1e-5, rtol=0)


@functools.cache
def _golden():
  with np.load(FIXTURE) as f:
    return dict(f)


def _hf_weights():
  """HF name -> array, in HF's layout."""
  return {k.removeprefix('weights/'): v for k, v in _golden().items()
          if k.startswith('weights/')}


def _batch(golden):
  return {k: golden[k] for k in _TOKENS}


@functools.cache
def _model_and_params():
  """Our `none` network with the fixture's weights, through the importer."""
  module = tiny_models.transformer('none')
  # Only the tree, shapes and dtypes of initial params matter here.
  initial = jax.tree.map(
      lambda s: np.zeros(s.shape, s.dtype),
      tiny_models.variable_shapes(module, _batch(_golden()))['params'])
  return module, checkpoint_import.merge_pretrained(
      initial, checkpoint_import.params_from_hf_t5(_hf_weights()))


def test_encoder_outputs_equal_hf():
  """Catches a mistake in the encoder alone (RMS norm, its epsilon, the
  gated GELU, attention scaling, bidirectional buckets) and says so."""
  golden = _golden()
  module, params = _model_and_params()
  encode = jax.jit(functools.partial(module.apply, enable_dropout=False,
                                     method='encode'))
  encoded = np.asarray(encode({'params': params},
                              golden['encoder_input_tokens']))
  valid = golden['encoder_attention_mask'].astype(bool)
  np.testing.assert_allclose(encoded[valid], golden['encoder_outputs'][valid],
                             **_TOLERANCE)


def test_logits_equal_hf():
  """The whole T5.1.1 (both stacks, causal buckets, cross-attention over a
  padded input, untied unscaled logits) as transformers computes it: catches a
  flipped bucket direction, a mean-subtracting or re-epsiloned RMS norm, exact
  instead of tanh GELU and a 1/sqrt(head_dim) query scaling, among others."""
  golden = _golden()
  module, params = _model_and_params()
  logits = np.asarray(tiny_models.apply(module, params, _batch(golden)))
  valid = golden['decoder_attention_mask'].astype(bool)
  assert not valid.all() and not golden['encoder_attention_mask'].astype(bool).all()
  np.testing.assert_allclose(logits[valid], golden['logits'][valid],
                             **_TOLERANCE)


@pytest.mark.parametrize('num_buckets,max_distance', [(32, 128), (10, 40)])
@pytest.mark.parametrize('kind', ['bidirectional', 'causal'])
def test_relative_position_buckets_equal_hf(num_buckets, max_distance, kind):
  """Offsets -200..200 (exact, logarithmic and clipped buckets) as
  `T5Attention._relative_position_bucket`: catches a flipped direction test
  (`distance < 0`, bidirectional) and keys after the query bucketed by their
  distance (`np.abs` for `np.maximum(distance, 0)`, causal)."""
  golden = _golden()
  buckets = relative_position.relative_position_bucket(
      golden['relative_offsets'], kind == 'bidirectional', num_buckets,
      max_distance)
  np.testing.assert_array_equal(
      buckets, golden[f'buckets/{num_buckets}_{max_distance}_{kind}'])


def test_export_has_hf_names_and_layouts():
  """`export_hf.split_params` of the imported weights gives back exactly
  the tensors transformers held, under its names."""
  _, params = _model_and_params()
  backbone, conditioning = export_hf.split_params(jax.device_get(params))
  weights = _hf_weights()
  assert backbone.keys() == weights.keys()
  assert not conditioning
  for name, value in weights.items():
    np.testing.assert_array_equal(backbone[name], value, name)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """The fixture's weights as `export_hf` writes a backbone and its config."""
  directory = tmp_path_factory.mktemp('hf')
  module, params = _model_and_params()
  params = jax.device_get(params)
  backbone, _ = export_hf.split_params(params)
  write_safetensors(directory / export_hf.BACKBONE_FILE, backbone)
  with open(directory / export_hf.HF_CONFIG_FILE, 'w') as f:
    json.dump(export_hf.hf_config(module.config, params), f)
  return directory


def test_export_loads_back_equal(exported):
  _, params = _model_and_params()
  restored = checkpoint_import.restore_pretrained(
      jax.tree.map(np.zeros_like, jax.device_get(params)), exported)
  jax.tree.map(np.testing.assert_array_equal, restored,
               jax.device_get(params))


def test_exported_config_is_the_hf_models(exported):
  """config.json fields that decide the architecture, as in the config
  transformers computed the fixture with (a wrong max distance or epsilon
  would change every output of a transformers model loaded from it)."""
  golden = json.loads(str(_golden()['config']))
  config = json.loads((exported / export_hf.HF_CONFIG_FILE).read_text())
  fields = ('model_type', 'vocab_size', 'd_model', 'd_kv', 'd_ff',
            'num_layers', 'num_decoder_layers', 'num_heads',
            'relative_attention_num_buckets',
            'relative_attention_max_distance', 'layer_norm_epsilon',
            'feed_forward_proj', 'tie_word_embeddings')
  assert {k: config[k] for k in fields} == {k: golden[k] for k in fields}


@pytest.mark.hf
def test_transformers_loads_the_export_with_our_logits(exported):
  """transformers itself loads the export and matches our network, on
  inputs longer than the fixture's."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  model = transformers.T5ForConditionalGeneration.from_pretrained(
      exported, attn_implementation='eager').eval()
  batch = tiny_models.unpacked_batch(seed=5, enc_len=30, dec_len=22)
  module, params = _model_and_params()
  ours = np.asarray(tiny_models.apply(module, params, batch))
  targets = batch['decoder_target_tokens'] > 0
  with torch.no_grad():
    theirs = model(
        input_ids=torch.from_numpy(batch['encoder_input_tokens']).long(),
        attention_mask=torch.from_numpy(batch['encoder_input_tokens'] > 0),
        decoder_input_ids=torch.from_numpy(
            batch['decoder_input_tokens']).long(),
        decoder_attention_mask=torch.from_numpy(targets)).logits.numpy()
  np.testing.assert_allclose(ours[targets], theirs[targets], **_TOLERANCE)
