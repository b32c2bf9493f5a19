"""Parameter counts of every variant equal their closed-form formulas."""

from flax import traverse_util
import numpy as np
import pytest

from hyperprompt_jax.conditioning import hyperprompt_config
from hyperprompt_jax.conditioning import param_counts
from hyperprompt_jax.sharding import partitioning
import tiny_models as tm


def _count(params, conditioning: bool) -> int:
  flat = traverse_util.flatten_dict(params)
  return sum(int(np.prod(v.shape)) for path, v in flat.items()
             if partitioning.is_conditioning_param(path) == conditioning)


@pytest.mark.parametrize('variant', hyperprompt_config.VARIANTS)
@pytest.mark.parametrize('stacks', [(True, True), (True, False), (False, True)])
def test_counts_match_formulas(variant, stacks):
  module = tm.transformer(variant, encoder=stacks[0], decoder=stacks[1])
  params = tm.variable_shapes(module)['params']
  assert _count(params, False) == param_counts.backbone_param_count(
      module.config)
  assert _count(params, True) == param_counts.conditioning_param_count(
      module.hyperprompt, module.config)


def test_global_grows_sublinearly_with_tasks_and_layers():
  cfg = tm.t5_config(num_encoder_layers=12, num_decoder_layers=12,
                     emb_dim=768, num_heads=12, head_dim=64)
  def extra(variant, tasks):
    return param_counts.conditioning_param_count(
        tm.hp_config(variant, num_tasks=tasks, prompt_length=16,
                     bottleneck_dim=32, task_embed_dim=32, task_mlp_dim=64), cfg)
  # Adding a task to `global` costs its prompt and embedding only; `sep`
  # pays a full set of local HyperNetworks per layer.
  global_step = extra('global', 9) - extra('global', 8)
  sep_step = extra('sep', 9) - extra('sep', 8)
  assert global_step == 2 * (16 * 768 + 32)
  assert sep_step > 10 * global_step
