"""Bench smoke test: one tiny variant, one timed step, sane JSON numbers."""

import json
import math

import pytest

from hyperprompt_jax import bench


def test_bench_writes_sane_numbers(tmp_path, capsys):
  out = tmp_path / 'bench.json'
  bench.main(['--variants=none', '--steps=1', '--batch_size=2',
              '--lengths=8,4', f'--output={out}'])
  report = json.loads(out.read_text())
  assert report['num_devices'] >= 1 and report['size'] == 'tiny'
  assert (report['batch_size'], report['input_length'],
          report['target_length']) == (2, 8, 4)
  [result] = report['results']
  assert result['variant'] == 'none' and result['vocab_size'] == 384
  assert result['num_params'] > 10_000
  for key in ('compile_seconds', 'step_seconds', 'tokens_per_second'):
    assert math.isfinite(result[key]) and result[key] > 0, key
  assert math.isclose(result['tokens_per_second'],
                      2 * (8 + 4) / result['step_seconds'])
  peak = result['peak_memory_bytes']
  assert peak is None or peak > 0
  assert 'tokens/s' in capsys.readouterr().out  # the printed table


def test_bench_rejects_unknown_variants():
  with pytest.raises(ValueError, match=r"bad --variants \['bogus'\]"):
    bench.main(['--variants=global,bogus'])
