"""Small T5.1.1 checkpoints in the Hugging Face safetensors layout, for tests."""

import numpy as np
from safetensors import numpy as safetensors_numpy

import tiny_models


def write_safetensors(path, tensors):
  """Writes `tensors` as a `.safetensors` file, marked as torch's like HF's."""
  safetensors_numpy.save_file(dict(tensors), str(path),
                              metadata={'format': 'pt'})


def hf_t5_tensors(seed=0, num_layers=2, d_model=16, d_ff=24, heads=2, d_kv=8,
                  vocab=tiny_models.VOCAB):
  """Random tensors named and shaped as HF's T5ForConditionalGeneration."""
  shapes = {'shared.weight': (vocab, d_model), 'lm_head.weight': (vocab, d_model)}
  for stack, attentions in (('encoder', ['SelfAttention']),
                            ('decoder', ['SelfAttention', 'EncDecAttention'])):
    shapes[f'{stack}.final_layer_norm.weight'] = (d_model,)
    shapes[f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.'
           'weight'] = (32, heads)
    for i in range(num_layers):
      block = f'{stack}.block.{i}.layer'
      for j, attention in enumerate(attentions):
        for proj in 'qkv':
          shapes[f'{block}.{j}.{attention}.{proj}.weight'] = (heads * d_kv,
                                                              d_model)
        shapes[f'{block}.{j}.{attention}.o.weight'] = (d_model, heads * d_kv)
        shapes[f'{block}.{j}.layer_norm.weight'] = (d_model,)
      mlp = len(attentions)
      shapes[f'{block}.{mlp}.DenseReluDense.wi_0.weight'] = (d_ff, d_model)
      shapes[f'{block}.{mlp}.DenseReluDense.wi_1.weight'] = (d_ff, d_model)
      shapes[f'{block}.{mlp}.DenseReluDense.wo.weight'] = (d_model, d_ff)
      shapes[f'{block}.{mlp}.layer_norm.weight'] = (d_model,)
  rng = np.random.default_rng(seed)
  return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
