"""T5.1.1 encoder-decoder whose self-attention layers take hyper-prompts.

With `HyperPromptConfig(variant='none')` the parameter tree and logical axes
are those of t5x's minimal T5.1.1 network, so its checkpoints restore as-is;
other variants add `hyperprompt`, `input_prompt` or `adapters` subtrees.
"""

from typing import Any, Sequence

from flax import linen as nn
from flax import struct
import jax.numpy as jnp

from hyperprompt_jax import adapter
from hyperprompt_jax import adapter_generator
from hyperprompt_jax import attention
from hyperprompt_jax import dense
from hyperprompt_jax import embedding
from hyperprompt_jax import hyperprompt_config as hp_config
from hyperprompt_jax import input_prompt
from hyperprompt_jax import masks
from hyperprompt_jax import mlp
from hyperprompt_jax import normalization
from hyperprompt_jax import prompt_generator
from hyperprompt_jax import relative_position


@struct.dataclass
class T5Config:
  """Backbone hyperparameters, with the field names of t5x's T5Config."""

  vocab_size: int
  dtype: Any = jnp.float32
  emb_dim: int = 512
  num_heads: int = 8
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  head_dim: int = 64
  mlp_dim: int = 2048
  mlp_activations: Sequence[str] = ('relu',)
  dropout_rate: float = 0.1
  logits_via_embedding: bool = False
  float32_attention_logits: bool = False


def _dropout(cfg: T5Config, x, deterministic: bool):
  # T5 shares the dropout pattern along the length axis.
  return nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic)


def _attention(cfg: T5Config, name: str):
  return attention.MultiHeadDotProductAttention(
      num_heads=cfg.num_heads, head_dim=cfg.head_dim, dtype=cfg.dtype,
      dropout_rate=cfg.dropout_rate, float32_logits=cfg.float32_attention_logits,
      name=name)


def _mlp_block(cfg: T5Config, x, deterministic: bool):
  return mlp.MlpBlock(
      intermediate_dim=cfg.mlp_dim, activations=cfg.mlp_activations,
      intermediate_dropout_rate=cfg.dropout_rate, dtype=cfg.dtype,
      name='mlp')(x, deterministic=deterministic)


def _residual(cfg: T5Config, norm_name: str, block, x, deterministic: bool):
  """`x + dropout(block(norm(x)))`: T5's pre-norm residual branch."""
  y = normalization.LayerNorm(dtype=cfg.dtype, name=norm_name)(x)
  return x + _dropout(cfg, block(y), deterministic)


def _relative_biases(cfg: T5Config):
  return relative_position.RelativePositionBiases(
      num_buckets=32, max_distance=128, num_heads=cfg.num_heads,
      dtype=cfg.dtype, name='relpos_bias')


def _prompt_generator(cfg: T5Config, hp: hp_config.HyperPromptConfig,
                      num_layers: int):
  return prompt_generator.HyperPromptGenerator(
      config=hp, num_layers=num_layers, num_heads=cfg.num_heads,
      head_dim=cfg.head_dim, emb_dim=cfg.emb_dim, dtype=cfg.dtype,
      name='hyperprompt')


def _layer_prompts(routed: prompt_generator.StackPrompts | None,
                   layer: int) -> attention.Prompts | None:
  return None if routed is None else routed.layer(layer)


def _routed_adapters(cfg: T5Config, hp: hp_config.HyperPromptConfig,
                     num_layers: int, task_ids, packed: bool):
  kernels = adapter_generator.AdapterGenerator(
      config=hp, num_layers=num_layers, emb_dim=cfg.emb_dim, dtype=cfg.dtype,
      name='adapters')()
  return adapter.route_adapters(kernels, task_ids, packed)


def _adapted(hp: hp_config.HyperPromptConfig, routed, layer: int,
             position: str, block, deterministic: bool):
  """`block`, followed by its task adapter when the stack has adapters."""
  if routed is None:
    return block
  return lambda y: adapter.TaskAdapter(
      dropout_rate=hp.dropout_rate, name=f'{position}_adapter')(
          block(y), routed.at(layer, position), deterministic)


class EncoderLayer(nn.Module):
  """Pre-norm self-attention and MLP blocks, `[batch, len, embed]` in and out.

  Attributes:
    config: backbone hyperparameters.
    hyperprompt: task conditioning (read for its adapter dropout).
    relative_embedding: the stack's relative position biases.
    index: this layer's index in its stack (selects its adapters).
  """

  config: T5Config
  hyperprompt: hp_config.HyperPromptConfig
  relative_embedding: nn.Module
  index: int

  @nn.compact
  def __call__(self, inputs, encoder_mask=None, prompts=None,
               deterministic=False, adapters=None):
    cfg = self.config
    adapted = lambda position, block: _adapted(
        self.hyperprompt, adapters, self.index, position, block, deterministic)
    length = inputs.shape[-2]
    bias = self.relative_embedding(length, length, True)
    x = _residual(
        cfg, 'pre_attention_layer_norm',
        adapted('attention', lambda y: _attention(cfg, 'attention')(
            y, y, encoder_mask, bias, prompts, deterministic=deterministic)),
        inputs, deterministic)
    return _residual(cfg, 'pre_mlp_layer_norm',
                     adapted('mlp', lambda y: _mlp_block(cfg, y, deterministic)),
                     x, deterministic)


class DecoderLayer(nn.Module):
  """Causal self-attention (with prompts), cross-attention and MLP blocks.

  Attributes: as `EncoderLayer`'s. Cross-attention gets no adapter.
  """

  config: T5Config
  hyperprompt: hp_config.HyperPromptConfig
  relative_embedding: nn.Module
  index: int

  @nn.compact
  def __call__(self, inputs, encoded, decoder_mask=None,
               encoder_decoder_mask=None, prompts=None, deterministic=False,
               decode=False, max_decode_length=None, adapters=None):
    cfg = self.config
    adapted = lambda position, block: _adapted(
        self.hyperprompt, adapters, self.index, position, block, deterministic)
    length = max_decode_length if decode and max_decode_length else (
        inputs.shape[-2])
    bias = self.relative_embedding(length, length, False)
    x = _residual(
        cfg, 'pre_self_attention_layer_norm',
        adapted('attention', lambda y: _attention(cfg, 'self_attention')(
            y, y, decoder_mask, bias, prompts, deterministic=deterministic,
            decode=decode)),
        inputs, deterministic)
    x = _residual(
        cfg, 'pre_cross_attention_layer_norm',
        lambda y: _attention(cfg, 'encoder_decoder_attention')(
            y, encoded, encoder_decoder_mask, deterministic=deterministic),
        x, deterministic)
    return _residual(cfg, 'pre_mlp_layer_norm',
                     adapted('mlp', lambda y: _mlp_block(cfg, y, deterministic)),
                     x, deterministic)


class Encoder(nn.Module):
  """Token ids `[batch, len]` -> encodings `[batch, len (+ l), embed]`."""

  config: T5Config
  hyperprompt: hp_config.HyperPromptConfig
  shared_embedding: nn.Module

  @nn.compact
  def __call__(self, encoder_input_tokens, encoder_mask=None,
               encoder_task_ids=None, packed=False, deterministic=False):
    """Encodes the inputs.

    Args:
      encoder_input_tokens: `[batch, len]` token ids.
      encoder_mask: `[batch, 1, len', len']` self-attention mask, where
        `len' = l + len` with prompt tuning and `len` otherwise.
      encoder_task_ids: `[batch, len]` task ids (unused by variant `none`).
      packed: whether rows hold several packed examples.
      deterministic: disables dropout.

    Returns:
      `[batch, len', embed]`.
    """
    cfg, hp = self.config, self.hyperprompt
    rel_emb = _relative_biases(cfg)
    x = self.shared_embedding(encoder_input_tokens.astype(jnp.int32))
    if hp.prompts_encoder_input:
      task_ids = prompt_generator.check_task_ids(encoder_task_ids,
                                                 'encoder_task_ids')
      x = input_prompt.InputPrompt(
          num_tasks=hp.num_tasks, prompt_length=hp.prompt_length,
          prompt_init=hp.prompt_init, dtype=cfg.dtype,
          name='input_prompt')(x, task_ids[:, 0])
    x = _dropout(cfg, x, deterministic).astype(cfg.dtype)

    routed = None
    if hp.conditions_encoder:
      task_ids = prompt_generator.check_task_ids(encoder_task_ids,
                                                 'encoder_task_ids')
      keys, values = _prompt_generator(cfg, hp, cfg.num_encoder_layers)(
          deterministic)
      routed = prompt_generator.route_prompts(keys, values, task_ids, packed)
    adapters = None
    if hp.adapts_encoder:
      task_ids = prompt_generator.check_task_ids(encoder_task_ids,
                                                 'encoder_task_ids')
      adapters = _routed_adapters(cfg, hp, cfg.num_encoder_layers, task_ids,
                                  packed)

    for i in range(cfg.num_encoder_layers):
      x = EncoderLayer(config=cfg, hyperprompt=hp, relative_embedding=rel_emb,
                       index=i, name=f'layers_{i}')(
                           x, encoder_mask, _layer_prompts(routed, i),
                           deterministic, adapters=adapters)
    x = normalization.LayerNorm(dtype=cfg.dtype, name='encoder_norm')(x)
    return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


class Decoder(nn.Module):
  """Decoder stack: `[batch, len]` target-side ids -> logits `[batch, len, V]`."""

  config: T5Config
  hyperprompt: hp_config.HyperPromptConfig
  shared_embedding: nn.Module

  @nn.compact
  def __call__(self, encoded, decoder_input_tokens, decoder_mask=None,
               encoder_decoder_mask=None, decoder_task_ids=None, packed=False,
               deterministic=False, decode=False, max_decode_length=None):
    """Decodes.

    Args:
      encoded: `[batch, enc_len, embed]` encoder output.
      decoder_input_tokens: `[batch, len]` (len 1 per cached decoding step).
      decoder_mask: `[batch, 1, len, len]` or None when decoding.
      encoder_decoder_mask: `[batch, 1, len, enc_len]`.
      decoder_task_ids: `[batch, len]` task ids; needed for training, scoring
        and the cache-initialising call, not for cached steps.
      packed: whether rows hold several packed examples.
      deterministic: disables dropout.
      decode: cached autoregressive decoding.
      max_decode_length: cache length when decoding.

    Returns:
      float32 logits `[batch, len, vocab]`.
    """
    cfg = self.config
    rel_emb = _relative_biases(cfg)
    y = self.shared_embedding(decoder_input_tokens.astype(jnp.int32))
    y = _dropout(cfg, y, deterministic).astype(cfg.dtype)

    routed = self._prompts(decoder_task_ids, packed, deterministic, decode)
    adapters = self._adapters(decoder_task_ids, packed, decode)
    for i in range(cfg.num_decoder_layers):
      y = DecoderLayer(config=cfg, hyperprompt=self.hyperprompt,
                       relative_embedding=rel_emb, index=i,
                       name=f'layers_{i}')(
                           y, encoded, decoder_mask=decoder_mask,
                           encoder_decoder_mask=encoder_decoder_mask,
                           prompts=_layer_prompts(routed, i),
                           deterministic=deterministic, decode=decode,
                           max_decode_length=max_decode_length,
                           adapters=adapters)
    y = normalization.LayerNorm(dtype=cfg.dtype, name='decoder_norm')(y)
    y = _dropout(cfg, y, deterministic)
    if cfg.logits_via_embedding:
      logits = self.shared_embedding.attend(y) / jnp.sqrt(y.shape[-1])
    else:
      logits = dense.DenseGeneral(cfg.vocab_size, dtype=jnp.float32,
                                  kernel_axes=('embed', 'vocab'),
                                  name='logits_dense')(y)
    return logits

  def _prompts(self, decoder_task_ids, packed, deterministic, decode):
    """Routed decoder prompts, cached per row across decoding steps."""
    cfg, hp = self.config, self.hyperprompt
    if not hp.conditions_decoder:
      return None
    if decode and self.has_variable('cache', 'prompt_keys'):
      # A cached step: the prompts were computed once, for the whole sequence.
      return prompt_generator.StackPrompts(
          self.get_variable('cache', 'prompt_keys'),
          self.get_variable('cache', 'prompt_values'))
    task_ids = prompt_generator.check_task_ids(decoder_task_ids,
                                               'decoder_task_ids')
    keys, values = _prompt_generator(cfg, hp, cfg.num_decoder_layers)(
        deterministic)
    # Decoded rows are unpacked: the cache holds each row's own task's slots.
    routed = prompt_generator.route_prompts(keys, values, task_ids,
                                            packed and not decode)
    if decode:
      self.put_variable('cache', 'prompt_keys', routed.keys)
      self.put_variable('cache', 'prompt_values', routed.values)
    return routed

  def _adapters(self, decoder_task_ids, packed, decode):
    """Routed decoder adapters; cached steps read each row's task id."""
    cfg, hp = self.config, self.hyperprompt
    if not hp.adapts_decoder:
      return None
    if decode and self.has_variable('cache', 'adapter_task_ids'):
      # A cached step: one token per row, of the row's task.
      task_ids = self.get_variable('cache', 'adapter_task_ids')[:, None]
    else:
      task_ids = prompt_generator.check_task_ids(decoder_task_ids,
                                                 'decoder_task_ids')
      if decode:
        self.put_variable('cache', 'adapter_task_ids', task_ids[:, 0])
    return _routed_adapters(cfg, hp, cfg.num_decoder_layers, task_ids, packed)


class Transformer(nn.Module):
  """T5.1.1 encoder-decoder conditioned on per-token task ids.

  Attributes:
    config: backbone hyperparameters.
    hyperprompt: task-conditioning variant and sizes.
  """

  config: T5Config
  hyperprompt: hp_config.HyperPromptConfig = hp_config.HyperPromptConfig()

  def setup(self):
    cfg = self.config
    shared_embedding = embedding.Embed(
        num_embeddings=cfg.vocab_size, features=cfg.emb_dim, dtype=cfg.dtype,
        attend_dtype=jnp.float32, embedding_init=nn.initializers.normal(1.0),
        one_hot=True, name='token_embedder')
    self.encoder = Encoder(config=cfg, hyperprompt=self.hyperprompt,
                           shared_embedding=shared_embedding)
    self.decoder = Decoder(config=cfg, hyperprompt=self.hyperprompt,
                           shared_embedding=shared_embedding)

  def _encoded_valid(self, encoder_input_tokens):
    """`[batch, enc_len]`: which encoder outputs are real (prompts included)."""
    valid = encoder_input_tokens > 0
    if self.hyperprompt.prompts_encoder_input:
      prompt = jnp.ones(valid.shape[:1] + (self.hyperprompt.prompt_length,),
                        bool)
      valid = jnp.concatenate([prompt, valid], axis=1)
    return valid

  def encode(self, encoder_input_tokens, encoder_segment_ids=None,
             encoder_task_ids=None, enable_dropout=True):
    """`[batch, len]` ids -> `[batch, enc_len, embed]` encodings.

    `enc_len` is `len`, or `prompt_length + len` with prompt tuning.
    """
    dtype = self.config.dtype
    valid = self._encoded_valid(encoder_input_tokens)
    encoder_mask = masks.make_attention_mask(valid, valid, dtype=dtype)
    if encoder_segment_ids is not None:
      if self.hyperprompt.prompts_encoder_input:
        raise ValueError('Prompt tuning prepends prompts to whole rows, so it '
                         'cannot take packed inputs: set pack=False.')
      encoder_mask = masks.combine_masks(
          encoder_mask,
          masks.make_attention_mask(encoder_segment_ids, encoder_segment_ids,
                                    jnp.equal, dtype=dtype), dtype=dtype)
    return self.encoder(encoder_input_tokens, encoder_mask, encoder_task_ids,
                        packed=encoder_segment_ids is not None,
                        deterministic=not enable_dropout)

  def decode(self, encoded, encoder_input_tokens, decoder_input_tokens,
             decoder_target_tokens, encoder_segment_ids=None,
             decoder_segment_ids=None, decoder_positions=None,
             decoder_task_ids=None, enable_dropout=True, decode=False,
             max_decode_length=None):
    """Decoder logits `[batch, len, vocab]` given the encodings.

    `encoder_input_tokens` `[batch, len_in]` only shapes the masks;
    `decoder_positions` is accepted for interface parity with t5x and unused
    (relative attention needs no positions).
    """
    del decoder_positions
    dtype = self.config.dtype
    encoded_valid = self._encoded_valid(encoder_input_tokens)
    if decode:
      decoder_mask = None
      encoder_decoder_mask = masks.make_attention_mask(
          jnp.ones_like(decoder_target_tokens), encoded_valid, dtype=dtype)
    else:
      decoder_mask = masks.make_decoder_mask(
          decoder_target_tokens, dtype, decoder_segment_ids)
      encoder_decoder_mask = masks.make_attention_mask(
          decoder_target_tokens > 0, encoded_valid, dtype=dtype)
    if encoder_segment_ids is not None:
      if decode:
        raise ValueError('Packed inputs cannot be decoded: pass no '
                         '`encoder_segment_ids` when decoding.')
      encoder_decoder_mask = masks.combine_masks(
          encoder_decoder_mask,
          masks.make_attention_mask(decoder_segment_ids, encoder_segment_ids,
                                    jnp.equal, dtype=dtype), dtype=dtype)
    return self.decoder(
        encoded, decoder_input_tokens, decoder_mask=decoder_mask,
        encoder_decoder_mask=encoder_decoder_mask,
        decoder_task_ids=decoder_task_ids,
        packed=decoder_segment_ids is not None,
        deterministic=not enable_dropout, decode=decode,
        max_decode_length=max_decode_length)

  def __call__(self, encoder_input_tokens, decoder_input_tokens,
               decoder_target_tokens, encoder_segment_ids=None,
               decoder_segment_ids=None, encoder_positions=None,
               decoder_positions=None, encoder_task_ids=None,
               decoder_task_ids=None, *, enable_dropout: bool = True,
               decode: bool = False):
    """Logits `[batch, dec_len, vocab]` (float32) of a teacher-forced pass.

    Args:
      encoder_input_tokens: `[batch, enc_len]` input ids (0 = padding).
      decoder_input_tokens: `[batch, dec_len]` targets shifted right.
      decoder_target_tokens: `[batch, dec_len]` targets (0 = padding).
      encoder_segment_ids: `[batch, enc_len]` example index when packed.
      decoder_segment_ids: `[batch, dec_len]` example index when packed.
      encoder_positions: unused; relative attention needs no positions.
      decoder_positions: unused likewise.
      encoder_task_ids: `[batch, enc_len]` task id of every input token.
      decoder_task_ids: `[batch, dec_len]` task id of every target token.
      enable_dropout: applies dropout (needs a 'dropout' rng).
      decode: initialise the autoregressive cache (full-length call).
    """
    del encoder_positions
    encoded = self.encode(encoder_input_tokens, encoder_segment_ids,
                          encoder_task_ids, enable_dropout)
    return self.decode(
        encoded, encoder_input_tokens, decoder_input_tokens,
        decoder_target_tokens, encoder_segment_ids, decoder_segment_ids,
        decoder_positions, decoder_task_ids, enable_dropout=enable_dropout,
        decode=decode)
