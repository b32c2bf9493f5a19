"""`python -m t5x.train` with our gin files: every variant trains a few steps,
and a plain T5.1.1 checkpoint restores into a HyperPrompt model through t5x's
`fallback_to_scratch`. Skipped where t5x is not installed."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from flax import traverse_util

from hyperprompt_jax.checkpointing import checkpoint_import
from hyperprompt_jax.checkpointing import scan_conversion
from hyperprompt_jax import convert_checkpoint
from hyperprompt_jax.sharding import partitioning

GIN_DIR = pathlib.Path(__file__).resolve().parents[2] / 'gin'
VARIANTS = ('none', 'share', 'sep', 'global', 'direct', 'prompt_tuning')


def t5x_run(binary, variant, gin_files, *bindings):
  """Runs `python -m <binary>` with our gin files; returns its output."""
  cmd = [sys.executable, '-m', binary, f'--gin_search_paths={GIN_DIR}',
         f'--gin_file=variants/{variant}.gin',
         *[f'--gin_file={f}' for f in gin_files],
         *[f'--gin.{b}' for b in bindings]]
  run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  return run.stdout + run.stderr


def t5x_train(model_dir, variant, *bindings, gin_files=()):
  """Runs the tiny t5x.train config; returns its combined output."""
  # A few steps, one checkpoint at the end, no evaluation.
  return t5x_run('t5x.train', variant,
                 ['t5x/runs/synthetic_tiny.gin', *gin_files],
                 f"MODEL_DIR='{model_dir}'", 'TRAIN_STEPS=2',
                 'utils.SaveCheckpointConfig.period=2',
                 'train.train_eval_dataset_cfg=None', *bindings)


def _params(checkpoint):
  return traverse_util.flatten_dict(
      checkpoint_import.read_t5x_checkpoint(checkpoint))


@pytest.mark.t5x
@pytest.mark.parametrize('variant', VARIANTS)
def test_t5x_train_runs_every_variant(tmp_path, variant):
  t5x_train(tmp_path, variant)
  params = _params(tmp_path / 'checkpoint_2')
  conditioning = [p for p in params if partitioning.is_conditioning_param(p)]
  assert bool(conditioning) == (variant != 'none')
  assert all(np.all(np.isfinite(v)) for v in params.values())


@pytest.mark.t5x
def test_t5x_restores_plain_checkpoint_with_fresh_hyperprompts(tmp_path):
  t5x_train(tmp_path / 'plain', 'none')
  plain = _params(tmp_path / 'plain' / 'checkpoint_2')
  # One step at learning rate 0: the restored backbone stays (up to rounding).
  t5x_train(tmp_path / 'global', 'global',
            f"INITIAL_CHECKPOINT_PATH='{tmp_path}/plain/checkpoint_2'",
            'TRAIN_STEPS=3', 'utils.SaveCheckpointConfig.period=1',
            'utils.create_learning_rate_scheduler.base_learning_rate=0.0')
  tuned = _params(tmp_path / 'global' / 'checkpoint_3')
  assert tuned.keys() > plain.keys()
  for path, value in plain.items():
    np.testing.assert_allclose(tuned[path], value, rtol=1e-5, atol=1e-7,
                               err_msg='/'.join(path))
  fresh = [tuned[p] for p in tuned.keys() - plain.keys()]
  assert all(partitioning.is_conditioning_param(p)
             for p in tuned.keys() - plain.keys())
  assert all(np.std(v) > 0 for v in fresh if v.size > 1 and v.ndim > 1)


@pytest.mark.t5x
def test_t5x_scanned_run_starts_from_a_converted_plain_checkpoint(tmp_path):
  """A plain (unscanned) checkpoint, converted, restores into a model with
  scanned layers; the converter takes the run's checkpoint back."""
  t5x_train(tmp_path / 'plain', 'none')
  plain = checkpoint_import.read_t5x_checkpoint(
      tmp_path / 'plain' / 'checkpoint_2')
  convert_checkpoint.convert(tmp_path / 'plain' / 'checkpoint_2',
                             tmp_path / 'scanned' / 'checkpoint_2', 'scanned')
  t5x_train(tmp_path / 'global', 'global',
            f"INITIAL_CHECKPOINT_PATH='{tmp_path}/scanned/checkpoint_2'",
            'network.T5Config.scan_layers=True', 'TRAIN_STEPS=3',
            'utils.SaveCheckpointConfig.period=1',
            'utils.create_learning_rate_scheduler.base_learning_rate=0.0')
  tuned = _params(tmp_path / 'global' / 'checkpoint_3')
  assert ('encoder', 'layers', 'mlp', 'wo', 'kernel') in tuned
  for path, value in traverse_util.flatten_dict(
      scan_conversion.scan_params(plain)).items():
    np.testing.assert_allclose(tuned[path], value, rtol=1e-5, atol=1e-7,
                               err_msg='/'.join(path))
  convert_checkpoint.convert(tmp_path / 'global' / 'checkpoint_3',
                             tmp_path / 'back' / 'checkpoint_3', 'unscanned')
  back = _params(tmp_path / 'back' / 'checkpoint_3')
  assert back.keys() == traverse_util.flatten_dict(
      scan_conversion.unscan_params(
          traverse_util.unflatten_dict(tuned))).keys()
  assert ('encoder', 'layers_1', 'mlp', 'wo', 'kernel') in back


@pytest.mark.t5x
def test_t5x_resumes_a_run_restored_from_a_plain_checkpoint(tmp_path):
  # t5x passes is_resuming=True to every restore transformation when
  # MODEL_DIR already holds a checkpoint: the second run must resume.
  t5x_train(tmp_path / 'plain', 'none')
  run = [f"INITIAL_CHECKPOINT_PATH='{tmp_path}/plain/checkpoint_2'",
         'utils.SaveCheckpointConfig.period=2']
  t5x_train(tmp_path / 'global', 'global', *run, 'TRAIN_STEPS=4')
  first = _params(tmp_path / 'global' / 'checkpoint_4')
  t5x_train(tmp_path / 'global', 'global', *run, 'TRAIN_STEPS=6')
  resumed = _params(tmp_path / 'global' / 'checkpoint_6')
  assert resumed.keys() == first.keys()
  assert any(not np.array_equal(resumed[p], first[p]) for p in first)
  # (t5x also saves the restored initial state, checkpoint_2.)
  saved = {p.name for p in (tmp_path / 'global').iterdir()}
  assert {'checkpoint_4', 'checkpoint_6'} <= saved
  assert not [name for name in saved if name.endswith('-tmp')]


@pytest.mark.t5x
def test_t5x_eval_and_infer_read_a_trained_run(tmp_path):
  t5x_train(tmp_path / 'run', 'global')
  checkpoint = f"CHECKPOINT_PATH='{tmp_path}/run/checkpoint_2'"
  t5x_run('t5x.eval', 'global', ['t5x/runs/synthetic_tiny_eval.gin'],
          checkpoint, f"EVAL_OUTPUT_DIR='{tmp_path}/eval'",
          'seqio.Evaluator.num_examples=4')
  metrics = {p.name: json.loads(p.read_text().splitlines()[-1]) for p in
             (tmp_path / 'eval' / 'inference_eval').glob('*-metrics.jsonl')}
  assert set(metrics) == {f'synthetic_{name}-metrics.jsonl' for name in (
      'reverse', 'max_digit', 'digit_sum', 'count_even', 'first_gt_last',
      'contains_seven')}
  assert all(row['step'] == 2 for row in metrics.values())
  t5x_run('t5x.infer', 'global', ['t5x/runs/synthetic_tiny_infer.gin'],
          checkpoint, f"INFER_OUTPUT_DIR='{tmp_path}/infer'",
          "MIXTURE_OR_TASK_NAME='synthetic_contains_seven'")
  predictions = (tmp_path / 'infer' /
                 'synthetic_contains_seven-predict.jsonl-00000-of-00001')
  rows = [json.loads(line) for line in predictions.read_text().splitlines()]
  assert len(rows) == 200 and all('prediction' in row for row in rows)


@pytest.mark.t5x
def test_t5x_frozen_backbone_trains_only_the_conditioning(tmp_path):
  t5x_train(tmp_path / 'plain', 'none')
  t5x_train(tmp_path / 'frozen', 'global',
            f"INITIAL_CHECKPOINT_PATH='{tmp_path}/plain/checkpoint_2'",
            'TRAIN_STEPS=4', gin_files=['t5x/tune_conditioning.gin'])
  plain = _params(tmp_path / 'plain' / 'checkpoint_2')
  start = _params(tmp_path / 'frozen' / 'checkpoint_2')
  tuned = _params(tmp_path / 'frozen' / 'checkpoint_4')
  for path, value in plain.items():
    np.testing.assert_array_equal(tuned[path], value, err_msg='/'.join(path))
  conditioning = [p for p in tuned if partitioning.is_conditioning_param(p)]
  assert conditioning and all(
      not np.array_equal(tuned[p], start[p]) for p in conditioning
      if tuned[p].ndim > 1)
