"""End to end: `python -m hyperprompt_jax.train`, checkpoint, resume, eval."""

import json
import os
import subprocess
import sys

import pytest

_MODEL_GIN = """
from __gin__ import dynamic_registration
from hyperprompt_jax import network
from hyperprompt_jax import hyperprompt_config
network.Transformer.config = @network.T5Config()
network.Transformer.hyperprompt = @hyperprompt_config.HyperPromptConfig()
network.T5Config.emb_dim = 16
network.T5Config.num_heads = 2
network.T5Config.num_encoder_layers = 1
network.T5Config.num_decoder_layers = 1
network.T5Config.head_dim = 8
network.T5Config.mlp_dim = 32
network.T5Config.mlp_activations = ('gelu', 'linear')
network.T5Config.dropout_rate = 0.0
hyperprompt_config.HyperPromptConfig.variant = 'share'
hyperprompt_config.HyperPromptConfig.num_tasks = %NUM_TASKS
hyperprompt_config.HyperPromptConfig.prompt_length = 2
hyperprompt_config.HyperPromptConfig.bottleneck_dim = 4
"""


def _train(tmp_path, model_dir, steps, *extra):
  gin_dir = tmp_path / 'gin'
  (gin_dir / 'models').mkdir(parents=True, exist_ok=True)
  (gin_dir / 'models' / 't5_1_1_tiny.gin').write_text(_MODEL_GIN)
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'jax_cache'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  return subprocess.run(
      [sys.executable, '-m', 'hyperprompt_jax.train',
       f'--gin_search_paths={gin_dir}',
       '--gin_file=runs/synthetic_tiny_base.gin',
       f"--gin.MODEL_DIR='{model_dir}'", f'--gin.TRAIN_STEPS={steps}',
       '--gin.BATCH_SIZE=4', '--gin.CHECKPOINT_PERIOD=2',
       '--gin.KEEP_CHECKPOINTS=2', '--gin.LOG_PERIOD=1',
       '--gin.EVAL_NUM_EXAMPLES=2', *extra],
      env=env, capture_output=True, text=True)


def test_train_checkpoint_resume_eval(tmp_path):
  model_dir = tmp_path / 'run'
  first = _train(tmp_path, model_dir, 4)
  assert first.returncode == 0, first.stderr[-3000:]
  steps = sorted(int(p.name) for p in (model_dir / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert steps == [2, 4]  # keep the last 2
  assert (model_dir / 'task_ids.json').exists()
  assert (model_dir / 'config.gin').exists()

  second = _train(tmp_path, model_dir, 6)
  assert second.returncode == 0, second.stderr[-3000:]
  assert 'Resumed from step 4' in second.stdout
  assert '[train step 5]' in second.stdout
  assert '[train step 1]' not in second.stdout
  results = json.loads((model_dir / 'eval_results.json').read_text())
  assert results['step'] == 6
  assert len(results['results']) == 6  # one row per synthetic task
  for metrics in results['results'].values():
    assert 'loss' in metrics and 'token_accuracy' in metrics
  assert 'synthetic_reverse' in second.stdout  # the printed table


def test_bad_gin_binding_is_one_line_error(tmp_path):
  out = _train(tmp_path, tmp_path / 'bad', 1, '--gin.NO_EQUALS_SIGN')
  assert out.returncode != 0
  assert out.stderr.strip().splitlines()[-1].startswith('error: bad gin flag')
