r"""A trained run as a Hugging Face T5.1.1 model plus its task conditioning.

  python -m hyperprompt_jax.export_hf --checkpoint=/tmp/run --output=/tmp/hf \
    [--step=N]

`--checkpoint` is the run's MODEL_DIR, as for `hyperprompt_jax.infer`; the
latest step is exported unless `--step` names one. `--output` receives:

  model.safetensors        the backbone in the `T5ForConditionalGeneration`
                           layout of google/t5-v1_1, in the params' dtype
  config.json              transformers' `T5Config` of that backbone
  hyperprompt.safetensors  the task-conditioning parameters, keyed by their
                           '/'-joined param paths (empty for variant `none`)
  task_ids.json            the run's task name -> id map
  config.gin               the run's gin config, which rebuilds the model

transformers loads the backbone alone, as vanilla T5.1.1 without the task
conditioning: `T5ForConditionalGeneration.from_pretrained(DIR)`.
`checkpoint_import.restore_pretrained(params, DIR)` then
`restore_conditioning(params, DIR)` load all of it into a HyperPrompt model.
"""

import argparse
import json
import os
import shutil
from typing import Any, Mapping, Optional, Sequence

from flax import traverse_util
import jax
import numpy as np
from safetensors import numpy as safetensors_numpy

from hyperprompt_jax.checkpointing import checkpoint_import
from hyperprompt_jax.checkpointing import scan_conversion
from hyperprompt_jax import gin_utils
from hyperprompt_jax import infer
from hyperprompt_jax.layers import normalization
from hyperprompt_jax.model import network
from hyperprompt_jax.sharding import partitioning
from hyperprompt_jax.training import train_loop

BACKBONE_FILE = 'model.safetensors'
HF_CONFIG_FILE = 'config.json'
CONDITIONING_FILE = 'hyperprompt.safetensors'
# Marks the files as holding torch-layout tensors, which transformers requires.
_METADATA = {'format': 'pt'}

Params = Mapping[str, Any]


def hf_config(cfg: network.T5Config, params: Params) -> dict[str, Any]:
  """transformers' `T5Config` fields of a T5.1.1 backbone (google/t5-v1_1).

  Args:
    cfg: the backbone's hyperparameters.
    params: its params (numpy), for the sizes `cfg` does not hold.

  Raises:
    ValueError: the backbone is not T5.1.1 (gated GELU, untied logits).
  """
  if tuple(cfg.mlp_activations) != ('gelu', 'linear') or (
      cfg.logits_via_embedding):
    raise ValueError(
        'only T5.1.1 backbones export to Hugging Face (mlp_activations='
        "('gelu', 'linear'), logits_via_embedding=False); this run has "
        f'{tuple(cfg.mlp_activations)}, {cfg.logits_via_embedding}')
  vocab_size, d_model = params['token_embedder']['embedding'].shape
  num_buckets = params['encoder']['relpos_bias']['rel_embedding'].shape[1]
  return {
      'architectures': ['T5ForConditionalGeneration'],
      'model_type': 't5',
      'd_model': int(d_model),
      'd_kv': cfg.head_dim,
      'd_ff': cfg.mlp_dim,
      'num_layers': cfg.num_encoder_layers,
      'num_decoder_layers': cfg.num_decoder_layers,
      'num_heads': cfg.num_heads,
      'relative_attention_num_buckets': int(num_buckets),
      'relative_attention_max_distance':
          network.RELATIVE_ATTENTION_MAX_DISTANCE,
      'vocab_size': int(vocab_size),
      'feed_forward_proj': 'gated-gelu',
      'tie_word_embeddings': False,
      'dropout_rate': cfg.dropout_rate,
      # The network's norms all keep LayerNorm's default epsilon.
      'layer_norm_epsilon': normalization.LayerNorm.epsilon,
      'initializer_factor': 1.0,
      'is_encoder_decoder': True,
      'use_cache': True,
      'decoder_start_token_id': 0,
      'pad_token_id': 0,
      'eos_token_id': 1,
      'torch_dtype': str(params['token_embedder']['embedding'].dtype),
  }


def split_params(params: Params) -> tuple[dict[str, np.ndarray],
                                          dict[str, np.ndarray]]:
  """Numpy params as (HF backbone tensors, conditioning tensors).

  Scanned layers (`T5Config.scan_layers`) are exported unscanned, as HF's
  blocks.

  Returns:
    HF key -> array in HF's layout (torch `[out, in]` kernels), and
    '/'-joined param path -> array for the task-conditioning parameters.
  """
  backbone, conditioning = {}, {}
  params = scan_conversion.unscan_params(params)
  for path, value in traverse_util.flatten_dict(params).items():
    if partitioning.is_conditioning_param(path):
      conditioning['/'.join(path)] = value
    else:
      transposed = checkpoint_import.transposed_in_hf(path)
      backbone[checkpoint_import.hf_key(path)] = np.ascontiguousarray(
          value.T if transposed else value)
  return backbone, conditioning


def export(model_dir: str, output: str, step: Optional[int] = None) -> int:
  """Writes the run's params at `step` (default: latest) to `output`.

  Returns:
    The exported step.
  """
  predictor = infer.Predictor(model_dir, step)
  params = jax.device_get(predictor.params)
  config = hf_config(predictor.model.module.config, params)
  backbone, conditioning = split_params(params)
  os.makedirs(output, exist_ok=True)
  for name, tensors in ((BACKBONE_FILE, backbone),
                        (CONDITIONING_FILE, conditioning)):
    # Written with open(), not save_file (which leaves 0600 files), so the
    # files get the same permissions as the others.
    with open(os.path.join(output, name), 'wb') as f:
      f.write(safetensors_numpy.save(tensors, metadata=_METADATA))
  with open(os.path.join(output, HF_CONFIG_FILE), 'w') as f:
    json.dump(config, f, indent=2)
  for name in (train_loop.TASK_IDS_FILE, train_loop.CONFIG_FILE):
    shutil.copyfile(os.path.join(model_dir, name), os.path.join(output, name))
  return predictor.step


def restore_conditioning(params: Params, directory: str) -> Params:
  """`params` with the task-conditioning parameters of an export.

  Args:
    params: a HyperPrompt model's params (numpy or sharded `jax.Array`s) of
      the exported run's configuration.
    directory: an `export` output directory.

  Raises:
    ValueError: the saved conditioning parameters are not exactly the
      model's.
  """
  saved = checkpoint_import.open_safetensors(
      os.path.join(directory, CONDITIONING_FILE))
  flat = traverse_util.flatten_dict(params)
  wanted = {'/'.join(p) for p in flat if partitioning.is_conditioning_param(p)}
  if saved.keys() != wanted:
    differing = sorted(saved.keys() ^ wanted)
    raise ValueError(
        f'{CONDITIONING_FILE} does not match the model ({len(differing)} '
        f'parameters differ, first: {differing[0]}); use the exported run\'s '
        'config.gin')
  return traverse_util.unflatten_dict({
      path: checkpoint_import.read_like(saved['/'.join(path)], value)
      if '/'.join(path) in saved else value for path, value in flat.items()})


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = gin_utils.command_parser('export_hf', __doc__)
  parser.add_argument('--checkpoint', required=True,
                      help='MODEL_DIR of a training run')
  parser.add_argument('--output', required=True,
                      help='directory for the Hugging Face files')
  parser.add_argument('--step', type=int, default=None,
                      help='checkpoint step (default: the latest)')
  return parser.parse_args(argv)


def main(argv: Sequence[str]) -> None:
  args = parse_args(argv)
  step = export(args.checkpoint, args.output, args.step)
  print(f'Exported step {step} of {args.checkpoint} to {args.output}')


if __name__ == '__main__':
  gin_utils.run_main(main)
