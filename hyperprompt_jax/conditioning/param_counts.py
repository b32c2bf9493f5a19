"""Closed-form parameter counts of the backbone and of every variant."""

from hyperprompt_jax.conditioning import adapter
from hyperprompt_jax.conditioning import hyperprompt_config as hp_config

NUM_RELPOS_BUCKETS = 32


def backbone_param_count(config) -> int:
  """Parameters of the T5.1.1 backbone (variant `none`).

  With d = emb_dim, n = num_heads * head_dim, f = mlp_dim, a = number of
  `mlp_activations`, V = vocab_size, H = num_heads, E/D = encoder/decoder
  layers:
    V d                                  token embedding
    + 2 H 32                             relative position tables
    + E (2 d + 4 d n + (a + 1) d f) + d  encoder layers and final norm
    + D (3 d + 8 d n + (a + 1) d f) + d  decoder layers and final norm
    + V d                                logits, unless tied to the embedding
  """
  d, f, a = config.emb_dim, config.mlp_dim, len(config.mlp_activations)
  n = config.num_heads * config.head_dim
  mlp = (a + 1) * d * f
  total = config.vocab_size * d + 2 * config.num_heads * NUM_RELPOS_BUCKETS
  total += config.num_encoder_layers * (2 * d + 4 * d * n + mlp) + d
  total += config.num_decoder_layers * (3 * d + 8 * d * n + mlp) + d
  if not config.logits_via_embedding:
    total += config.vocab_size * d
  return total


def stack_conditioning_param_count(hp: hp_config.HyperPromptConfig,
                                   num_layers: int, emb_dim: int,
                                   joined_kv: int) -> int:
  """Hyper-prompt parameters of one stack of M = `num_layers` layers.

  With T tasks, l prompt length, d = emb_dim, n = joined_kv (heads *
  head_dim), b bottleneck, t task_embed_dim, h task_mlp_dim:
    direct: 2 M T l n
    share:  T l d + 2 M (d b + b n)
    sep:    T l d + 2 M T (d b + b n)
    global: T l d + T t + M t + (2 t h + h) + (h t + t) + 2 (t d b + t b n)
  Only `direct` and `sep` grow with T x M; `global` adds T t + M t.
  """
  T, l, M = hp.num_tasks, hp.prompt_length, num_layers
  d, n, b = emb_dim, joined_kv, hp.bottleneck_dim
  t, h = hp.task_embed_dim, hp.task_mlp_dim
  local = d * b + b * n
  return {
      'direct': 2 * M * T * l * n,
      'share': T * l * d + 2 * M * local,
      'sep': T * l * d + 2 * M * T * local,
      'global': (T * l * d + T * t + M * t + (2 * t * h + h) + (h * t + t)
                 + 2 * t * local),
  }[hp.variant]


def stack_adapter_param_count(hp: hp_config.HyperPromptConfig,
                              num_layers: int, emb_dim: int) -> int:
  """Adapter parameters of one stack of M = `num_layers` layers.

  With P = 2 adapter positions (after self-attention, after the MLP), T
  tasks, d = emb_dim, a adapter_dim, t task_embed_dim, h task_mlp_dim:
    adapter:     2 M P T d a
    hyperformer: T t + M t + P t + (3 t h + h) + (h t + t) + 2 t d a
  `adapter` grows with T x M; `hyperformer` adds T t per task.
  """
  T, M, P = hp.num_tasks, num_layers, len(adapter.POSITIONS)
  d, a = emb_dim, hp.adapter_dim
  t, h = hp.task_embed_dim, hp.task_mlp_dim
  return {
      'adapter': 2 * M * P * T * d * a,
      'hyperformer': (T * t + M * t + P * t + (3 * t * h + h) + (h * t + t)
                      + 2 * t * d * a),
  }[hp.variant]


def conditioning_param_count(hp: hp_config.HyperPromptConfig, config) -> int:
  """All task-conditioning parameters added to the backbone.

  Layer-prompt and adapter variants: the per-stack count summed over the
  conditioned stacks. `prompt_tuning`: T l d. `none`: 0.
  """
  if hp.prompts_encoder_input:
    return hp.num_tasks * hp.prompt_length * config.emb_dim
  joined_kv = config.num_heads * config.head_dim
  stacks = ((hp.encoder, config.num_encoder_layers),
            (hp.decoder, config.num_decoder_layers))
  total = 0
  for conditioned, num_layers in stacks:
    if not conditioned:
      continue
    if hp.variant in hp_config.LAYER_PROMPT_VARIANTS:
      total += stack_conditioning_param_count(hp, num_layers, config.emb_dim,
                                              joined_kv)
    elif hp.variant in hp_config.ADAPTER_VARIANTS:
      total += stack_adapter_param_count(hp, num_layers, config.emb_dim)
  return total
