"""Our trainer starts a HyperPrompt run from a plain T5.1.1 checkpoint."""

from flax import traverse_util
import numpy as np

from hyperprompt_jax.checkpointing import checkpoint_import
from hyperprompt_jax import infer
from hyperprompt_jax.sharding import partitioning
from tests import train_runs
from hf_t5_files import hf_t5_tensors
from hf_t5_files import write_safetensors


def test_initial_checkpoint_restores_backbone_and_leaves_prompts_fresh(
    tmp_path):
  # gin/models/t5_1_1_tiny.gin's sizes, with the synthetic run's vocabulary.
  tensors = hf_t5_tensors(num_layers=2, d_model=64, d_ff=128, heads=4,
                          d_kv=16, vocab=384)
  checkpoint = tmp_path / 'model.safetensors'
  write_safetensors(checkpoint, tensors)
  model_dir = tmp_path / 'run'
  result = train_runs.run_train_main([
      '--gin_file=runs/synthetic_global_tiny.gin',
      f"--gin.MODEL_DIR='{model_dir}'",
      f"--gin.INITIAL_CHECKPOINT_PATH='{checkpoint}'",
      '--gin.TRAIN_STEPS=1', '--gin.BATCH_SIZE=4', '--gin.LEARNING_RATE=0.0',
      '--gin.train_loop.train.eval_dataset_cfg=None'])
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Backbone restored from' in result.stdout

  # With a zero learning rate the saved step-1 params are the initial ones.
  params = traverse_util.flatten_dict(infer.Predictor(str(model_dir)).params)
  expected = traverse_util.flatten_dict(
      checkpoint_import.params_from_hf_t5(tensors))
  backbone = {p: v for p, v in params.items()
              if not partitioning.is_conditioning_param(p)}
  assert set(backbone) == set(expected)
  for path, value in backbone.items():
    np.testing.assert_array_equal(np.asarray(value), expected[path], path)
  # Freshly initialised (random, except the zero-initialised MLP biases).
  conditioning = [v for p, v in params.items()
                  if partitioning.is_conditioning_param(p)
                  and not p[-1].endswith('_bias')]
  assert conditioning and all(np.std(np.asarray(v)) > 0 for v in conditioning)
