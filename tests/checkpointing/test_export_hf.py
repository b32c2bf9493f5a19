"""Hugging Face export of a trained run, and its round trip back."""

import json
import os
import stat
import sys

from flax import traverse_util
import gin
import jax
import numpy as np
import pytest

from hyperprompt_jax.checkpointing import checkpoint_import
from hyperprompt_jax import export_hf
from hyperprompt_jax import gin_utils
from hyperprompt_jax import infer
from hyperprompt_jax.sharding import partitioning
from tests import train_runs


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
  """A one-step run of the tiny `global` model on the synthetic mixture."""
  directory = tmp_path_factory.mktemp('run')
  result = train_runs.run_train_main([
      '--gin_file=runs/synthetic_global_tiny.gin',
      f"--gin.MODEL_DIR='{directory}'", '--gin.TRAIN_STEPS=1',
      '--gin.BATCH_SIZE=4', '--gin.train_loop.train.eval_dataset_cfg=None'])
  assert result.returncode == 0, result.stderr
  yield str(directory)
  gin.clear_config()  # Predictor parses the run's config.gin.


@pytest.fixture(scope='module')
def original(model_dir):
  """The run's params as numpy."""
  return jax.device_get(infer.Predictor(model_dir).params)


@pytest.fixture(scope='module')
def exported(model_dir, tmp_path_factory):
  output = str(tmp_path_factory.mktemp('hf'))
  export_hf.main([f'--checkpoint={model_dir}', f'--output={output}'])
  return output


def test_import_of_the_export_equals_the_trained_params(original, exported):
  fresh = jax.tree.map(np.zeros_like, original)
  restored = export_hf.restore_conditioning(
      checkpoint_import.restore_pretrained(fresh, exported), exported)
  flat, restored = (traverse_util.flatten_dict(t) for t in (original,
                                                            restored))
  assert restored.keys() == flat.keys()
  assert any(partitioning.is_conditioning_param(p) for p in flat)
  for path, value in flat.items():
    assert restored[path].dtype == value.dtype
    np.testing.assert_array_equal(restored[path], value, '/'.join(path))


def test_backbone_alone_restores_only_the_backbone(original, exported):
  fresh = jax.tree.map(np.zeros_like, original)
  restored = traverse_util.flatten_dict(
      checkpoint_import.restore_pretrained(fresh, exported))
  flat = traverse_util.flatten_dict(original)
  for path, value in restored.items():
    expected = (np.zeros_like(value) if partitioning.is_conditioning_param(
        path) else flat[path])
    np.testing.assert_array_equal(value, expected, '/'.join(path))


def test_writes_t5_v1_1_config_and_run_files(model_dir, exported):
  with open(f'{exported}/config.json') as f:
    config = json.load(f)
  # gin/models/t5_1_1_tiny.gin with the synthetic run's byte vocabulary.
  assert {k: config[k] for k in (
      'd_model', 'd_kv', 'd_ff', 'num_layers', 'num_decoder_layers',
      'num_heads', 'relative_attention_num_buckets',
      'relative_attention_max_distance', 'feed_forward_proj',
      'tie_word_embeddings', 'model_type', 'architectures',
      'decoder_start_token_id', 'pad_token_id', 'eos_token_id')} == {
          'd_model': 64, 'd_kv': 16, 'd_ff': 128, 'num_layers': 2,
          'num_decoder_layers': 2, 'num_heads': 4,
          'relative_attention_num_buckets': 32,
          'relative_attention_max_distance': 128,
          'feed_forward_proj': 'gated-gelu', 'tie_word_embeddings': False,
          'model_type': 't5', 'architectures': ['T5ForConditionalGeneration'],
          'decoder_start_token_id': 0, 'pad_token_id': 0, 'eos_token_id': 1}
  backbone = checkpoint_import.open_safetensors(f'{exported}/model.safetensors')
  assert backbone['shared.weight'].shape == (config['vocab_size'], 64)
  # torch Linear layout: [out, in].
  assert backbone['encoder.block.0.layer.1.DenseReluDense.wi_0.weight'].shape == (
      128, 64)
  with open(f'{exported}/task_ids.json') as f, open(
      f'{model_dir}/task_ids.json') as g:
    assert json.load(f) == json.load(g)


def test_exported_files_share_one_ordinary_mode(exported):
  """The safetensors files are as readable as config.json (save_file would
  leave them 0600, unreadable to other users of a shared export)."""
  modes = {name: stat.S_IMODE(os.stat(os.path.join(exported, name)).st_mode)
           for name in os.listdir(exported)}
  assert set(modes.values()) == {modes['config.json']}, modes


def test_conditioning_of_another_model_is_a_clear_error(original, exported):
  params = {**original, 'encoder': {
      k: v for k, v in original['encoder'].items() if k != 'hyperprompt'}}
  with pytest.raises(ValueError, match='does not match the model'):
    export_hf.restore_conditioning(params, exported)


def test_missing_run_is_one_error_line(tmp_path, monkeypatch):
  monkeypatch.setattr(sys, 'argv', [
      'export_hf', f'--checkpoint={tmp_path}/none', f'--output={tmp_path}/o'])
  with pytest.raises(SystemExit) as exit_info:
    gin_utils.run_main(export_hf.main)
  message = str(exit_info.value)
  assert message.startswith('error: no checkpoints in') and '\n' not in message
