"""T5.1.1 encoder-decoder whose self-attention layers take hyper-prompts.

With `HyperPromptConfig(variant='none')` the parameter tree and logical axes
are those of t5x's minimal T5.1.1 network, so its checkpoints restore as-is;
other variants add `hyperprompt`, `input_prompt` or `adapters` subtrees.
With `T5Config.scan_layers` each stack's layers are one scanned subtree
`layers` (see `scan_conversion`).
"""

import functools
from typing import Any, Sequence

from flax import linen as nn
from flax import struct
from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp

from hyperprompt_jax.conditioning import adapter
from hyperprompt_jax.conditioning import adapter_generator
from hyperprompt_jax.conditioning import hyperprompt_config as hp_config
from hyperprompt_jax.conditioning import input_prompt
from hyperprompt_jax.conditioning import prompt_generator
from hyperprompt_jax.conditioning import routing
from hyperprompt_jax.layers import attention
from hyperprompt_jax.layers import dense
from hyperprompt_jax.layers import embedding
from hyperprompt_jax.layers import masks
from hyperprompt_jax.layers import mlp
from hyperprompt_jax.layers import normalization
from hyperprompt_jax.layers import relative_position
from hyperprompt_jax.model import layerwise
from hyperprompt_jax.sharding import partitioning


def _dots_with_no_batch_dims_saveable(prim, *avals, **params) -> bool:
  """`jax.checkpoint_policies.dots_with_no_batch_dims_saveable`, also for
  the custom-VJP matmul of `dense.DenseGeneral`, which the policy would
  otherwise see as an opaque call (and save nothing of)."""
  policy = jax.checkpoint_policies.dots_with_no_batch_dims_saveable
  if prim.name == 'custom_vjp_call':
    jaxpr = params['call_jaxpr']
    eqns = getattr(jaxpr, 'jaxpr', jaxpr).eqns
    return len(eqns) == 1 and bool(policy(
        eqns[0].primitive, *(v.aval for v in eqns[0].invars),
        **eqns[0].params))
  return policy(prim, *avals, **params)


# Per-layer activation rematerialisation (`T5Config.remat_policy`): what each
# layer keeps from its forward pass for the backward pass; the rest is
# recomputed. 'minimal' keeps the matmul outputs without batch dimensions (the
# projections and MLP), as flaxformer's 'minimal'.
REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'minimal': _dots_with_no_batch_dims_saveable,
}


# T5's relative position buckets, as t5x's T5.1.1 network fixes them.
RELATIVE_ATTENTION_NUM_BUCKETS = 32
RELATIVE_ATTENTION_MAX_DISTANCE = 128


@struct.dataclass
class T5Config:
  """Backbone hyperparameters, with the field names of t5x's T5Config.

  Four fields trade speed, compute or tracing for memory, without changing
  the outputs:
    batch_sharded_lookup: the token lookup gathers the embedding table
      first and looks up each chip's own rows (`embedding.Embed`'s
      `batch_sharded`), which holds far less for fully sharded parameters.
    concatenate_prompt_slots: rows of one task prepend their prompt slots to
      the keys and values (one softmax) instead of scoring them as a second
      block (`attention.dot_product_attention`): fewer kernels, faster on
      CPU; on TPU the wider logits pad to the next 128 lanes and the copies
      are kept, so Base and XXL plans need up to 12% more memory.
    remat_policy: 'none' keeps every layer's activations for the backward
      pass; 'full' recomputes each layer's forward pass in the backward pass
      (keeps only the layer inputs); 'minimal' keeps the matmul outputs that
      have no batch dimension and recomputes the rest.
    scan_layers: runs each stack's layers as one `nn.scan`: parameters gain a
      leading `layers` axis (`encoder/layers/...` instead of
      `encoder/layers_0/...`; `scan_conversion` converts), and compile time no
      longer grows with depth.
  """

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
  concatenate_prompt_slots: bool = False
  batch_sharded_lookup: bool = False
  remat_policy: str = 'none'
  scan_layers: bool = False

  def __post_init__(self):
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f'Unknown remat_policy {self.remat_policy!r}; use one '
                       f'of {", ".join(REMAT_POLICIES)}.')


def compute_dtype_params(config: T5Config, params):
  """`params` with every layer's projection kernels cast to `config.dtype`.

  The layers of a stack (`layers`, or `layers_<i>` unscanned) use their
  `kernel`s only through `dense.DenseGeneral`, which casts them to
  `config.dtype` and returns the kernel gradient in it. So the loss of these
  params is the same function, and its gradient with respect to them holds
  the same values as the float32 gradient (which is their upcast), in half
  the memory for bfloat16. Everything else (the embedding, logits, norms,
  relative position biases, task conditioning) keeps its dtype.
  """
  def cast(path, x):
    names = partitioning.key_names(path)
    in_layer = any(n == layerwise.LAYERS or n.startswith(
        f'{layerwise.LAYERS}_') for n in names)
    return x.astype(config.dtype) if in_layer and names[-1] == 'kernel' else x
  return jax.tree_util.tree_map_with_path(cast, params)


def _dropout(cfg: T5Config, x, deterministic: bool):
  # T5 shares the dropout pattern along the length axis.
  return nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic)


def _attention(cfg: T5Config, name: str):
  return attention.MultiHeadDotProductAttention(
      num_heads=cfg.num_heads, head_dim=cfg.head_dim, dtype=cfg.dtype,
      dropout_rate=cfg.dropout_rate, float32_logits=cfg.float32_attention_logits,
      concatenate_prompts=cfg.concatenate_prompt_slots, name=name)


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
      num_buckets=RELATIVE_ATTENTION_NUM_BUCKETS,
      max_distance=RELATIVE_ATTENTION_MAX_DISTANCE, num_heads=cfg.num_heads,
      dtype=cfg.dtype, name='relpos_bias')


def _prompt_generator(cfg: T5Config, hp: hp_config.HyperPromptConfig,
                      num_layers: int):
  return prompt_generator.HyperPromptGenerator(
      config=hp, num_layers=num_layers, num_heads=cfg.num_heads,
      head_dim=cfg.head_dim, emb_dim=cfg.emb_dim, dtype=cfg.dtype,
      name='hyperprompt')


def _routed_adapters(cfg: T5Config, hp: hp_config.HyperPromptConfig,
                     num_layers: int, task_ids):
  kernels = adapter_generator.AdapterGenerator(
      config=hp, num_layers=num_layers, emb_dim=cfg.emb_dim, dtype=cfg.dtype,
      name='adapters')()
  return routing.route_adapters(kernels, task_ids)


def _adapted(hp: hp_config.HyperPromptConfig, adapters, position: str, block,
             deterministic: bool):
  """`block`, followed by its task adapter when the layer has adapters."""
  if adapters is None:
    return block
  return lambda y: adapter.TaskAdapter(
      dropout_rate=hp.dropout_rate, name=f'{position}_adapter')(
          block(y), adapters.position(position), deterministic)


def _layer_scan_axes(per_layer):
  """`nn.scan` in-axes of a per-layer argument (None: nothing to scan)."""
  return nn.broadcast if per_layer is None else per_layer.scan_axes()


def _run_layers(stack: nn.Module, layer_cls, num_layers: int, x, shared,
                per_layer, remat: bool = True, **attributes):
  """Applies a stack's `num_layers` layers to `x`.

  Args:
    stack: the `Encoder` or `Decoder` calling (its `config`: `remat_policy`,
      `scan_layers`).
    layer_cls: `EncoderLayer` or `DecoderLayer`.
    num_layers: layers of the stack.
    x: the first layer's input `[batch, len, embed]`.
    shared: arguments every layer takes as they are (masks, biases).
    per_layer: arguments holding every layer's slice along a leading
      `layers` axis (`attention.Prompts`, `adapter.RoutedAdapters`) or None;
      layer `i` gets `.layer(i)`, or the scan slices them.
    remat: whether `cfg.remat_policy` applies (not when decoding).
    **attributes: the layer's attributes.

  Returns:
    The last layer's output.
  """
  cfg = stack.config
  updates = layerwise.active()
  if (updates is not None and cfg.scan_layers and remat
      and not stack.is_initializing()):
    return _run_layers_updating(stack, updates, layer_cls, num_layers, x,
                                shared, per_layer, **attributes)
  if remat and cfg.remat_policy != 'none':
    layer_cls = nn.remat(layer_cls, policy=REMAT_POLICIES[cfg.remat_policy],
                         prevent_cse=not cfg.scan_layers)
  if cfg.scan_layers:
    scanned = nn_partitioning.scan_with_axes(
        layer_cls, variable_axes={'params': 0, 'cache': 0},
        split_rngs={'params': True, 'dropout': True},
        in_axes=(nn.broadcast,) * len(shared) + tuple(
            _layer_scan_axes(a) for a in per_layer),
        length=num_layers, axis_name='layers')
    x, _ = scanned(**attributes, scanned=True, name=layerwise.LAYERS)(
        x, *shared, *per_layer)
    return x
  for i in range(num_layers):
    x = layer_cls(**attributes, name=f'{layerwise.LAYERS}_{i}')(
        x, *shared, *(None if a is None else a.layer(i) for a in per_layer))
  return x


def _run_layers_updating(stack: nn.Module, updates: layerwise.LayerUpdates,
                         layer_cls, num_layers: int, x, shared, per_layer,
                         **attributes):
  """`_run_layers` of a scanned stack whose backward pass applies the
  optimizer to each layer (`layerwise.scan_with_updates`); every layer is
  recomputed in the backward pass, as with remat 'full'."""
  layer = layer_cls(**attributes, parent=None)
  rngs = None
  if not attributes['deterministic'] and stack.config.dropout_rate > 0:
    rngs = jax.random.split(stack.make_rng('dropout'), num_layers)

  def layer_fn(params, y, context, index, rng):
    layer_shared, layer_per_layer = context
    return layer.apply(
        {'params': params}, y, *layer_shared,
        *(None if a is None else a.layer(index) for a in layer_per_layer),
        rngs=None if rng is None else {'dropout': rng})

  return layerwise.scan_with_updates(
      layer_fn, functools.partial(updates.update, stack.name),
      stack.variables['params'][layerwise.LAYERS],
      updates.states[stack.name], x, (shared, per_layer), rngs)


class EncoderLayer(nn.Module):
  """Pre-norm self-attention and MLP blocks, `[batch, len, embed]` in and out.

  Attributes:
    config: backbone hyperparameters.
    hyperprompt: task conditioning (read for its adapter dropout).
    deterministic: disables dropout.
    scanned: the layer is the body of an `nn.scan` (returns `(x, None)`).
  """

  config: T5Config
  hyperprompt: hp_config.HyperPromptConfig
  deterministic: bool = False
  scanned: bool = False

  @nn.compact
  def __call__(self, inputs, encoder_mask=None, bias=None, prompts=None,
               adapters=None):
    """Encodes one layer.

    Args:
      inputs: `[batch, len, embed]`.
      encoder_mask: `[batch, 1, len, len]` self-attention mask.
      bias: `[1, heads, len, len]` relative position bias of the stack.
      prompts: this layer's `attention.Prompts`, or None.
      adapters: this layer's `adapter.RoutedAdapters`, or None.
    """
    cfg, deterministic = self.config, self.deterministic
    adapted = lambda position, block: _adapted(
        self.hyperprompt, adapters, position, block, deterministic)
    x = _residual(
        cfg, 'pre_attention_layer_norm',
        adapted('attention', lambda y: _attention(cfg, 'attention')(
            y, y, encoder_mask, bias, prompts, deterministic=deterministic)),
        inputs, deterministic)
    x = _residual(cfg, 'pre_mlp_layer_norm',
                  adapted('mlp', lambda y: _mlp_block(cfg, y, deterministic)),
                  x, deterministic)
    return (x, None) if self.scanned else x


class DecoderLayer(nn.Module):
  """Causal self-attention (with prompts), cross-attention and MLP blocks.

  Attributes: as `EncoderLayer`'s, and `decode` (cached autoregressive
  decoding). Cross-attention gets no adapter.
  """

  config: T5Config
  hyperprompt: hp_config.HyperPromptConfig
  deterministic: bool = False
  decode: bool = False
  scanned: bool = False

  @nn.compact
  def __call__(self, inputs, encoded, decoder_mask=None,
               encoder_decoder_mask=None, bias=None, prompts=None,
               adapters=None):
    """Decodes one layer.

    Args:
      inputs: `[batch, len, embed]` (len 1 per cached decoding step).
      encoded: `[batch, enc_len, embed]` encoder output.
      decoder_mask: `[batch, 1, len, len]` or None when decoding.
      encoder_decoder_mask: `[batch, 1, len, enc_len]`.
      bias: `[1, heads, len, len]` relative position bias of the stack (the
        cache length when decoding).
      prompts: this layer's `attention.Prompts`; None on cached decoding
        steps, which read the ones the cache-initialising call stored.
      adapters: this layer's `adapter.RoutedAdapters` (None on cached
        decoding steps, as `prompts`), or None.
    """
    cfg, deterministic = self.config, self.deterministic
    if self.decode and self.hyperprompt.conditions_decoder:
      prompts = self._decoding_prompts(prompts)
    if self.decode and self.hyperprompt.adapts_decoder:
      adapters = self._decoding_adapters(adapters)
    adapted = lambda position, block: _adapted(
        self.hyperprompt, adapters, position, block, deterministic)
    x = _residual(
        cfg, 'pre_self_attention_layer_norm',
        adapted('attention', lambda y: _attention(cfg, 'self_attention')(
            y, y, decoder_mask, bias, prompts, deterministic=deterministic,
            decode=self.decode)),
        inputs, deterministic)
    x = _residual(
        cfg, 'pre_cross_attention_layer_norm',
        lambda y: _attention(cfg, 'encoder_decoder_attention')(
            y, encoded, encoder_decoder_mask, deterministic=deterministic),
        x, deterministic)
    x = _residual(cfg, 'pre_mlp_layer_norm',
                  adapted('mlp', lambda y: _mlp_block(cfg, y, deterministic)),
                  x, deterministic)
    return (x, None) if self.scanned else x

  def _decoding_prompts(self, prompts):
    """This layer's prompts, cached per row for the whole decoded sequence.

    The cache-initialising call stores each row's own task's slots,
    `[batch, l, heads, head_dim]` (batch first, as every cache array, so
    beam search tiles and reorders them); cached steps read them back.
    """
    if self.has_variable('cache', 'prompt_key'):
      return attention.Prompts(self.get_variable('cache', 'prompt_key'),
                               self.get_variable('cache', 'prompt_value'))
    self.put_variable('cache', 'prompt_key', prompts.key)
    self.put_variable('cache', 'prompt_value', prompts.value)
    return prompts

  def _decoding_adapters(self, adapters):
    """This layer's adapter kernels, cached per row like its prompts.

    The cache-initialising call stores each row's kernels batch first,
    `adapter_down` `[batch, positions, embed, a]` and `adapter_up`
    `[batch, positions, a, embed]`; cached steps read them back instead of
    generating every task's kernels again.
    """
    if self.has_variable('cache', 'adapter_down'):
      return adapter.RoutedAdapters(
          jnp.moveaxis(self.get_variable('cache', 'adapter_down'), 0, 1),
          jnp.moveaxis(self.get_variable('cache', 'adapter_up'), 0, 1))
    for name, kernels in (('adapter_down', adapters.down),
                          ('adapter_up', adapters.up)):
      self.put_variable('cache', name, jnp.moveaxis(kernels, 1, 0))
    return adapters


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
      encoder_task_ids: `[batch]` row or `[batch, len]` token task ids
        (unused by variant `none`).
      packed: whether rows hold several packed examples.
      deterministic: disables dropout.

    Returns:
      `[batch, len', embed]`.
    """
    cfg, hp = self.config, self.hyperprompt
    tasks = None
    if hp.prompts_encoder_input or hp.conditions_encoder or hp.adapts_encoder:
      tasks = routing.stack_task_ids(encoder_task_ids, 'encoder_task_ids',
                                     packed, hp)
    rel_emb = _relative_biases(cfg)
    x = self.shared_embedding(encoder_input_tokens.astype(jnp.int32))
    if hp.prompts_encoder_input:
      # Prompt tuning takes unpacked rows only (Transformer.encode checks).
      x = input_prompt.InputPrompt(
          num_tasks=hp.num_tasks, prompt_length=hp.prompt_length,
          prompt_init=hp.prompt_init, dtype=cfg.dtype,
          name='input_prompt')(x, tasks)
    x = _dropout(cfg, x, deterministic).astype(cfg.dtype)

    prompts = None
    if hp.conditions_encoder:
      keys, values = _prompt_generator(cfg, hp, cfg.num_encoder_layers)(
          deterministic)
      prompts = routing.route_prompts(keys, values, tasks)
    adapters = None
    if hp.adapts_encoder:
      adapters = _routed_adapters(cfg, hp, cfg.num_encoder_layers, tasks)

    length = x.shape[-2]
    bias = rel_emb(length, length, True)
    x = _run_layers(self, EncoderLayer, cfg.num_encoder_layers, x,
                    (encoder_mask, bias), (prompts, adapters), config=cfg,
                    hyperprompt=hp, deterministic=deterministic)
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
      decoder_task_ids: `[batch]` row or `[batch, len]` token task ids;
        needed for training, scoring and the cache-initialising call, not
        for cached steps.
      packed: whether rows hold several packed examples.
      deterministic: disables dropout.
      decode: cached autoregressive decoding.
      max_decode_length: cache length when decoding.

    Returns:
      float32 logits `[batch, len, vocab]`.
    """
    cfg = self.config
    # Cached steps find the cache that the cache-initialising call filled.
    cached_step = decode and bool(self.variables.get('cache'))
    rel_emb = _relative_biases(cfg)
    y = self.shared_embedding(decoder_input_tokens.astype(jnp.int32))
    y = _dropout(cfg, y, deterministic).astype(cfg.dtype)

    prompts = None
    if self.hyperprompt.conditions_decoder and not cached_step:
      prompts = self._prompts(decoder_task_ids, packed and not decode,
                              deterministic)
    adapters = None if cached_step else self._adapters(
        decoder_task_ids, packed and not decode)
    length = max_decode_length if decode and max_decode_length else (
        y.shape[-2])
    bias = rel_emb(length, length, False)
    y = _run_layers(self, DecoderLayer, cfg.num_decoder_layers, y,
                    (encoded, decoder_mask, encoder_decoder_mask, bias),
                    (prompts, adapters), remat=not decode, config=cfg,
                    hyperprompt=self.hyperprompt, deterministic=deterministic,
                    decode=decode)
    y = normalization.LayerNorm(dtype=cfg.dtype, name='decoder_norm')(y)
    y = _dropout(cfg, y, deterministic)
    if cfg.logits_via_embedding:
      logits = self.shared_embedding.attend(y) / jnp.sqrt(y.shape[-1])
    else:
      logits = dense.DenseGeneral(cfg.vocab_size, dtype=jnp.float32,
                                  kernel_axes=('embed', 'vocab'),
                                  name='logits_dense')(y)
    return logits

  def _prompts(self, decoder_task_ids, packed, deterministic):
    """Every layer's routed prompts (decoded rows are unpacked: each row gets
    its own task's slots, which the layers cache)."""
    cfg, hp = self.config, self.hyperprompt
    tasks = routing.stack_task_ids(decoder_task_ids, 'decoder_task_ids',
                                   packed, hp)
    keys, values = _prompt_generator(cfg, hp, cfg.num_decoder_layers)(
        deterministic)
    return routing.route_prompts(keys, values, tasks)

  def _adapters(self, decoder_task_ids, packed):
    """Every layer's routed decoder adapters (decoded rows are unpacked:
    each row gets its own task's kernels, which the layers cache)."""
    cfg, hp = self.config, self.hyperprompt
    if not hp.adapts_decoder:
      return None
    tasks = routing.stack_task_ids(decoder_task_ids, 'decoder_task_ids',
                                   packed, hp)
    return _routed_adapters(cfg, hp, cfg.num_decoder_layers, tasks)


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
        one_hot=True, batch_sharded=cfg.batch_sharded_lookup,
        name='token_embedder')
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
               decoder_positions=None, task_ids=None, encoder_task_ids=None,
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
      task_ids: `[batch]` task of every row, for both stacks, where rows
        hold one task (the feature converter's `task_ids`); or instead:
      encoder_task_ids: `[batch, enc_len]` task id of every input token
        (packed rows that mix tasks), or `[batch]` task of every row.
      decoder_task_ids: `[batch, dec_len]` or `[batch]`, likewise.
      enable_dropout: applies dropout (needs a 'dropout' rng).
      decode: initialise the autoregressive cache (full-length call).
    """
    del encoder_positions
    if task_ids is not None:
      encoder_task_ids = decoder_task_ids = task_ids
    encoded = self.encode(encoder_input_tokens, encoder_segment_ids,
                          encoder_task_ids, enable_dropout)
    return self.decode(
        encoded, encoder_input_tokens, decoder_input_tokens,
        decoder_target_tokens, encoder_segment_ids, decoder_segment_ids,
        decoder_positions, decoder_task_ids, enable_dropout=enable_dropout,
        decode=decode)
