"""`convert_checkpoint`: t5x checkpoints rewritten with scanned or unscanned
layers, bit for bit, read back as t5x reads them (no t5x needed)."""

import jax
import numpy as np
import pytest
from flax import serialization
from flax import traverse_util

from hyperprompt_jax.checkpointing import checkpoint_import
from hyperprompt_jax.checkpointing import scan_conversion
from hyperprompt_jax import convert_checkpoint
import tiny_models as tm


def _params():
  """A tiny HyperPrompt params tree (unscanned) with random values."""
  shapes = tm.variable_shapes(tm.transformer('global'))['params']
  rng = np.random.default_rng(0)
  return jax.tree.map(
      lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)


def _assert_equal(tree, expected):
  flat = traverse_util.flatten_dict(tree)
  expected = traverse_util.flatten_dict(expected)
  assert flat.keys() == expected.keys()
  for path, value in expected.items():
    np.testing.assert_array_equal(flat[path], value, '/'.join(path))


def test_layers_convert_both_ways_bit_for_bit(tmp_path, monkeypatch):
  # Blocks of a few rows, so that leaves are written in several blocks.
  monkeypatch.setattr(convert_checkpoint, '_BLOCK_BYTES', 64)
  params = _params()
  source = tmp_path / 'plain' / 'checkpoint_7'
  convert_checkpoint.write_t5x_checkpoint(
      jax.tree.map(checkpoint_import.LazyArray.of, params), 7, source)
  _assert_equal(checkpoint_import.read_t5x_checkpoint(source), params)

  scanned = tmp_path / 'scanned' / 'checkpoint_7'
  assert convert_checkpoint.convert(source, scanned, 'scanned') == 7
  read = checkpoint_import.read_t5x_checkpoint(scanned)
  assert 'layers' in read['encoder'] and 'layers_0' not in read['encoder']
  _assert_equal(read, scan_conversion.scan_params(params))

  back = tmp_path / 'back' / 'checkpoint_7'
  convert_checkpoint.main(['--input', str(scanned), '--output', str(back),
                           '--layers', 'unscanned'])
  _assert_equal(checkpoint_import.read_t5x_checkpoint(back), params)


def test_output_is_what_t5x_restores(tmp_path):
  """t5x's checks: exactly `version` (3) and `optimizer` at the top, the
  step in `state`, and specs relative to the checkpoint with the `chunks`
  and `compressor` that t5x's reader removes."""
  path = tmp_path / 'checkpoint_3'
  convert_checkpoint.write_t5x_checkpoint(
      {'encoder': {'encoder_norm': {'scale': checkpoint_import.LazyArray.of(
          np.ones(4, np.float32))}}}, 3, path)
  contents = serialization.msgpack_restore((path / 'checkpoint').read_bytes())
  assert set(contents) == {'version', 'optimizer'}
  assert contents['version'] == 3
  assert int(contents['optimizer']['state']['step']) == 3
  spec = contents['optimizer']['target']['encoder']['encoder_norm']['scale']
  assert spec['kvstore'] == {'driver': 'file',
                             'path': 'target.encoder.encoder_norm.scale'}
  assert {'chunks', 'compressor', 'shape'} <= spec['metadata'].keys()
  assert (path / 'target.encoder.encoder_norm.scale').is_dir()


def test_step_comes_from_the_checkpoint_name(tmp_path):
  step = convert_checkpoint.checkpoint_step
  assert step(tmp_path / 'checkpoint_1000000') == 1000000
  assert step(tmp_path / 'checkpoint_12' / 'checkpoint') == 12
  assert step(tmp_path / 'model.safetensors') == 0


def test_unknown_layout_is_named():
  with pytest.raises(ValueError, match="'stacked'; use one of scanned"):
    convert_checkpoint.convert_layers({}, 'stacked')
