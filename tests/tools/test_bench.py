"""Benchmarks: packed batches as training packs them, FLOPs and MFU in the
report, and the side-by-side with t5x's step (where t5x imports)."""

import json
import math
import sys

import numpy as np
import pytest

from hyperprompt_jax.tools import bench
from hyperprompt_jax.tools import t5x_bench

SHAPE = bench.Shape(batch_size=2, input_length=8, target_length=4,
                    vocab_size=384)


@pytest.mark.parametrize('rows', ['packed', 'mixed'])
def test_packed_rows_hold_examples_of_their_own_tasks(rows):
  batch = bench.random_batch(SHAPE, 384, rows, seed=1)
  segments = batch['decoder_segment_ids']
  assert segments.tolist() == [[1, 2, 3, 4]] * 2
  assert batch['encoder_segment_ids'].tolist() == [[1, 1, 2, 2, 3, 3, 4, 4]] * 2
  assert batch['encoder_positions'].tolist() == [[0, 1] * 4] * 2
  if rows == 'packed':
    # One task per row, as our feature converter packs them: `[batch]` ids.
    assert batch['task_ids'].shape == (2,)
    assert 'encoder_task_ids' not in batch
  else:
    # One task per example, the same on both sides; rows mix tasks.
    for row in range(2):
      by_segment = dict(zip(batch['encoder_segment_ids'][row],
                            batch['encoder_task_ids'][row]))
      assert [by_segment[s] for s in segments[row]] == list(
          batch['decoder_task_ids'][row])
    tasks_per_row = [len(set(ids))
                     for ids in batch['encoder_task_ids'].tolist()]
    assert max(tasks_per_row) > 1
  # Decoder inputs: each example's targets shifted right from 0.
  starts = batch['decoder_positions'] == 0
  assert np.all(batch['decoder_input_tokens'][starts] == 0)
  targets, inputs = batch['decoder_target_tokens'], batch['decoder_input_tokens']
  np.testing.assert_array_equal(inputs[:, 1:][~starts[:, 1:]],
                                targets[:, :-1][~starts[:, 1:]])
  unpacked = bench.random_batch(SHAPE, 384, 'unpacked')
  assert 'encoder_segment_ids' not in unpacked
  assert unpacked['task_ids'].shape == (2,)
  assert 'encoder_task_ids' not in unpacked


def test_bench_reports_flops_and_mfu_for_both_row_layouts(tmp_path, capsys,
                                                         monkeypatch):
  # A smaller peak matmul: nine peak readings, each in milliseconds.
  monkeypatch.setattr(bench, 'PEAK_MATMUL_SIZE', 512)
  out = tmp_path / 'bench.json'
  bench.main(['--variants=none,global', '--rows=packed,mixed,unpacked',
              '--steps=1', '--rounds=2', '--batch_size=2', '--lengths=8,4',
              f'--output={out}'])
  report = json.loads(out.read_text())
  assert (report['batch_size'], report['input_length'],
          report['target_length'], report['dtype'],
          report['rounds']) == (2, 8, 4, 'float32', 2)
  assert report['peak_source'] == '512^2 float32 matmul, measured'
  results = {(r['variant'], r['rows']): r for r in report['results']}
  assert sorted(results) == [
      (variant, rows) for variant in ('global', 'none')
      for rows in ('mixed', 'packed', 'unpacked')]
  for r in results.values():
    for key in ('compile_seconds', 'step_seconds', 'flops_per_step'):
      assert math.isfinite(r[key]) and r[key] > 0, key
    assert math.isclose(r['tokens_per_second'], 2 * (8 + 4) / r['step_seconds'])
    assert math.isclose(r['flops_per_second'],
                        r['flops_per_step'] / r['step_seconds'])
    assert r['peak_flops_per_second'] > 1e8
    assert math.isclose(r['mfu'], r['flops_per_second']
                        / r['peak_flops_per_second'])
  # Prompts add work: more FLOPs in every layout, most where rows of mixed
  # tasks score every task's slots, whereas `none` routes nothing.
  flops = {key: r['flops_per_step'] for key, r in results.items()}
  for rows in ('packed', 'mixed', 'unpacked'):
    assert flops['global', rows] > flops['none', rows]
  assert flops['global', 'mixed'] > flops['global', 'packed']
  assert math.isclose(flops['none', 'mixed'], flops['none', 'packed'])
  table = capsys.readouterr().out
  assert 'MFU' in table and 'vs none' in table


def test_prompt_tuning_is_not_benchmarked_packed(tmp_path):
  out = tmp_path / 'bench.json'
  bench.main(['--variants=prompt_tuning', '--rows=packed', f'--output={out}'])
  assert json.loads(out.read_text())['results'] == []


@pytest.mark.parametrize('flag, message', [
    ('--variants=global,bogus', "bad --variants='global,bogus'"),
    ('--rows=packd', "bad --rows='packd'"),
    ('--lengths=8', "bad --lengths='8'"),
    ('--steps=0', 'bad --steps=0'),
    ('--rounds=0', 'bad --rounds=0'),
])
def test_bench_rejects_bad_flags(flag, message):
  with pytest.raises(ValueError, match=message):
    bench.main([flag])


def test_t5x_bench_without_t5x_says_so_in_one_line(monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, 't5x', None)  # As if t5x were absent.
  t5x_bench.main(['--steps=1'])
  assert capsys.readouterr().out == t5x_bench.T5X_MISSING + '\n'


@pytest.mark.t5x
def test_t5x_bench_times_both_steps_on_the_same_program(tmp_path):
  out = tmp_path / 't5x.json'
  t5x_bench.main(['--variants=global', '--rows=packed', '--steps=1',
                  '--rounds=1', '--batch_size=2', '--lengths=8,4',
                  f'--output={out}'])
  [result] = json.loads(out.read_text())['results']
  assert result['ours_seconds'] > 0 and result['t5x_seconds'] > 0
  assert math.isclose(result['speedup'],
                      result['t5x_seconds'] / result['ours_seconds'])
  # Same network, loss and optimizer: XLA counts nearly the same work (the
  # metrics differ in a few elementwise ops, a few % at this size).
  assert math.isclose(result['flops_ours'], result['flops_t5x'], rel_tol=0.1)


@pytest.mark.t5x
def test_whole_runs_read_both_trainers_logged_steps_per_second():
  runs = t5x_bench.whole_runs('none', steps=3, log_period=1, rounds=2)
  assert len(runs.ours_steps_per_second) == len(runs.t5x_steps_per_second) == 2
  assert min(runs.ours_steps_per_second + runs.t5x_steps_per_second) > 0
  ratios = [ours / t5x for ours, t5x in zip(runs.ours_steps_per_second,
                                            runs.t5x_steps_per_second)]
  assert math.isclose(runs.speedup, sum(ratios) / 2)


# Dense bf16 Tensor Core peaks from NVIDIA's datasheets: H100 SXM and H200
# SXM give 1,979 TFLOPS with 2:4 sparsity, so 989.5 dense; A100 (40 and 80
# GB) gives 312 dense (624 with sparsity).
DATASHEET_BF16_PEAKS = {
    'NVIDIA H100 80GB HBM3': 989.5e12,
    'NVIDIA H200': 989.5e12,
    'NVIDIA A100-SXM4-80GB': 312e12,
    'NVIDIA A100-SXM4-40GB': 312e12,
}


@pytest.mark.parametrize('kind', sorted(DATASHEET_BF16_PEAKS))
def test_known_chips_report_mfu_against_their_bf16_datasheet_peak(
    kind, monkeypatch):
  """On a GPU of the table (eight of them, faked: no GPU here) the bf16 peak
  is the datasheet's dense figure times the devices (to the table's rounding
  to 1 TFLOPS). Catches a wrong or sparse figure, or a chip missing."""
  chip = type('Chip', (), {'device_kind': kind})
  monkeypatch.setattr(bench.jax, 'devices', lambda: [chip()] * 8)
  flops, source = bench.peak_flops_per_second('bfloat16')
  assert source == f'{kind} bf16 datasheet'
  assert flops == pytest.approx(8 * DATASHEET_BF16_PEAKS[kind], rel=1e-3)


def test_other_chips_time_a_matmul():
  """A chip outside the table (this CPU) measures its peak with a matmul."""
  flops, source = bench.peak_flops_per_second('bfloat16', size=64, repeats=2)
  assert flops > 0 and source == '64^2 bfloat16 matmul, measured'
