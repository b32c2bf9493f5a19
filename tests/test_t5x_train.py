"""`python -m t5x.train` with our gin files: every variant trains a few steps,
and a plain T5.1.1 checkpoint restores into a HyperPrompt model through t5x's
`fallback_to_scratch`. Skipped where t5x is not installed."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from flax import traverse_util

from hyperprompt_jax import checkpoint_import
from hyperprompt_jax import partitioning

GIN_DIR = pathlib.Path(__file__).resolve().parents[1] / 'gin'
VARIANTS = ('none', 'share', 'sep', 'global', 'direct', 'prompt_tuning')


def t5x_train(model_dir, variant, *bindings):
  """Runs the tiny t5x.train config; returns its combined output."""
  cmd = [sys.executable, '-m', 't5x.train', f'--gin_search_paths={GIN_DIR}',
         f'--gin_file=variants/{variant}.gin',
         '--gin_file=t5x/runs/synthetic_tiny.gin',
         f"--gin.MODEL_DIR='{model_dir}'",
         # A few steps, one checkpoint at the end, no evaluation.
         '--gin.TRAIN_STEPS=2', '--gin.utils.SaveCheckpointConfig.period=2',
         '--gin.train.train_eval_dataset_cfg=None',
         *[f'--gin.{b}' for b in bindings]]
  run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  return run.stdout + run.stderr


@pytest.mark.t5x
@pytest.mark.parametrize('variant', VARIANTS)
def test_t5x_train_runs_every_variant(tmp_path, variant):
  t5x_train(tmp_path, variant)
  params = traverse_util.flatten_dict(
      checkpoint_import.read_t5x_checkpoint(tmp_path / 'checkpoint_2'))
  conditioning = [p for p in params if partitioning.is_conditioning_param(p)]
  assert bool(conditioning) == (variant != 'none')
  assert all(np.all(np.isfinite(v)) for v in params.values())


@pytest.mark.t5x
def test_t5x_restores_plain_checkpoint_with_fresh_hyperprompts(tmp_path):
  t5x_train(tmp_path / 'plain', 'none')
  plain = traverse_util.flatten_dict(checkpoint_import.read_t5x_checkpoint(
      tmp_path / 'plain' / 'checkpoint_2'))
  # One step at learning rate 0: the restored backbone stays (up to rounding).
  t5x_train(tmp_path / 'global', 'global',
            f"INITIAL_CHECKPOINT_PATH='{tmp_path}/plain/checkpoint_2'",
            'TRAIN_STEPS=3', 'utils.SaveCheckpointConfig.period=1',
            'utils.create_learning_rate_scheduler.base_learning_rate=0.0')
  tuned = traverse_util.flatten_dict(checkpoint_import.read_t5x_checkpoint(
      tmp_path / 'global' / 'checkpoint_3'))
  assert tuned.keys() > plain.keys()
  for path, value in plain.items():
    np.testing.assert_allclose(tuned[path], value, rtol=1e-5, atol=1e-7,
                               err_msg='/'.join(path))
  fresh = [tuned[p] for p in tuned.keys() - plain.keys()]
  assert all(partitioning.is_conditioning_param(p)
             for p in tuned.keys() - plain.keys())
  assert all(np.std(v) > 0 for v in fresh if v.size > 1 and v.ndim > 1)


@pytest.mark.t5x
def test_t5x_resumes_a_run_restored_from_a_plain_checkpoint(tmp_path):
  # t5x passes is_resuming=True to every restore transformation when
  # MODEL_DIR already holds a checkpoint: the second run must resume.
  t5x_train(tmp_path / 'plain', 'none')
  run = [f"INITIAL_CHECKPOINT_PATH='{tmp_path}/plain/checkpoint_2'",
         'utils.SaveCheckpointConfig.period=2']
  t5x_train(tmp_path / 'global', 'global', *run, 'TRAIN_STEPS=4')
  first = traverse_util.flatten_dict(checkpoint_import.read_t5x_checkpoint(
      tmp_path / 'global' / 'checkpoint_4'))
  t5x_train(tmp_path / 'global', 'global', *run, 'TRAIN_STEPS=6')
  resumed = traverse_util.flatten_dict(checkpoint_import.read_t5x_checkpoint(
      tmp_path / 'global' / 'checkpoint_6'))
  assert resumed.keys() == first.keys()
  assert any(not np.array_equal(resumed[p], first[p]) for p in first)
  # (t5x also saves the restored initial state, checkpoint_2.)
  saved = {p.name for p in (tmp_path / 'global').iterdir()}
  assert {'checkpoint_4', 'checkpoint_6'} <= saved
  assert not [name for name in saved if name.endswith('-tmp')]
