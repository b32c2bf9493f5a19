"""Tiny networks and batches shared by the model tests."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import seqio

from hyperprompt_jax.conditioning import hyperprompt_config
from hyperprompt_jax.model import encoder_decoder
from hyperprompt_jax.model import network

VOCAB = 32
NUM_TASKS = 3
CONDITIONED_VARIANTS = ('share', 'sep', 'global', 'direct', 'prompt_tuning',
                        'adapter', 'hyperformer')
VARIANTS = ('none', *CONDITIONED_VARIANTS)
LAYER_PROMPT_VARIANTS = hyperprompt_config.LAYER_PROMPT_VARIANTS
ADAPTER_VARIANTS = hyperprompt_config.ADAPTER_VARIANTS


def t5_config(**overrides) -> network.T5Config:
  kwargs = dict(vocab_size=VOCAB, emb_dim=16, num_heads=2, head_dim=8,
                mlp_dim=24, num_encoder_layers=2, num_decoder_layers=2,
                mlp_activations=('gelu', 'linear'), dropout_rate=0.0)
  kwargs.update(overrides)
  return network.T5Config(**kwargs)


def hp_config(variant: str, **overrides):
  kwargs = dict(variant=variant, num_tasks=NUM_TASKS, prompt_length=3,
                bottleneck_dim=4, task_embed_dim=5, task_mlp_dim=6,
                adapter_dim=4)
  kwargs.update(overrides)
  return hyperprompt_config.HyperPromptConfig(**kwargs)


def transformer(variant: str, t5_overrides=None,
                **hp_overrides) -> network.Transformer:
  return network.Transformer(t5_config(**(t5_overrides or {})),
                             hp_config(variant, **hp_overrides))


def model(variant: str = 'share', module=None, **t5_overrides
          ) -> encoder_decoder.EncoderDecoderModel:
  """The encoder-decoder model around `module` (default: the tiny network of
  `variant`, with `t5_overrides`), on a byte-free vocabulary of ids whose EOS
  is 1; batches come ready-made (no feature converter)."""
  module = module or transformer(variant, t5_overrides)
  vocab = seqio.PassThroughVocabulary(module.config.vocab_size, eos_id=1)
  return encoder_decoder.EncoderDecoderModel(module, vocab, vocab,
                                             feature_converter_cls=object)


# Sizes whose heads and widths split over a `model` mesh axis of 2 or 4 (the
# trainer's sharding tests).
SHARDABLE = dict(vocab_size=64, num_heads=4, head_dim=4, mlp_dim=32,
                 num_encoder_layers=1, num_decoder_layers=1)


def script_path(test_file: str) -> list[str]:
  """`sys.path` entries for a subprocess that imports the module of
  `test_file` and these helpers (the tests' root)."""
  return [os.path.dirname(test_file), os.path.dirname(__file__)]


def random_tokens(seed: int, shape) -> np.ndarray:
  return np.random.RandomState(seed).randint(2, VOCAB, size=shape).astype(
      np.int32)


def unpacked_batch(seed: int = 0, batch=2, enc_len=7, dec_len=5, task_ids=(0, 1)):
  """Rows of one example each, with some padding, and per-token task ids."""
  inputs = random_tokens(seed, (batch, enc_len))
  targets = random_tokens(seed + 1, (batch, dec_len))
  inputs[-1, -2:] = 0
  targets[-1, -1:] = 0
  decoder_inputs = np.concatenate(
      [np.zeros((batch, 1), np.int32), targets[:, :-1]], axis=1)
  tasks = np.asarray(task_ids, np.int32)[:, None]
  return {
      'encoder_input_tokens': inputs,
      'decoder_input_tokens': decoder_inputs,
      'decoder_target_tokens': targets,
      'encoder_task_ids': np.broadcast_to(tasks, inputs.shape).copy(),
      'decoder_task_ids': np.broadcast_to(tasks, targets.shape).copy(),
  }


def train_batch(seed: int, batch=8, length=6, vocab=64):
  """A trainer's batch: random rows with some padding, a task per row
  (`task_ids` `[batch]`, as the feature converter gives rows of one task),
  and loss weights."""
  rng = np.random.RandomState(seed)
  targets = rng.randint(2, vocab, (batch, length)).astype(np.int32)
  targets[:, -rng.randint(1, 3):] = 0  # some padding
  task = rng.randint(0, NUM_TASKS, (batch,))
  return {
      'encoder_input_tokens': rng.randint(2, vocab, (batch, length)).astype(
          np.int32),
      'decoder_target_tokens': targets,
      'decoder_input_tokens': np.pad(targets[:, :-1], ((0, 0), (1, 0))),
      'decoder_loss_weights': (targets > 0).astype(np.float32),
      'task_ids': task.astype(np.int32),
  }


def packed_batch(batch):
  """Packs the two rows of `unpacked_batch()` into one row, with segment ids."""
  def cat(name, fill=None):
    rows = []
    for r in range(2):
      stack = name.split('_')[0]
      reference = 'decoder_target_tokens' if stack == 'decoder' else (
          'encoder_input_tokens')
      valid = batch[reference][r] > 0
      values = batch[name][r][valid] if fill is None else np.full(
          valid.sum(), fill(r))
      rows.append(values)
    return np.concatenate(rows)[None].astype(np.int32)
  packed = {
      name: cat(name) for name in (
          'encoder_input_tokens', 'decoder_input_tokens',
          'decoder_target_tokens', 'encoder_task_ids', 'decoder_task_ids')}
  packed['encoder_segment_ids'] = cat('encoder_input_tokens', lambda r: r + 1)
  packed['decoder_segment_ids'] = cat('decoder_target_tokens', lambda r: r + 1)
  return packed


def _features(batch):
  return {k: jnp.asarray(v) for k, v in batch.items()
          if k != 'decoder_loss_weights'}


@functools.lru_cache(maxsize=None)
def _init(module, shapes, seed):
  features = {name: jnp.ones(shape, jnp.int32) for name, shape in shapes}
  init = jax.jit(lambda rng, features: module.init(
      rng, **features, enable_dropout=False)['params'])
  return init(jax.random.PRNGKey(seed), features)


def variable_shapes(module, batch=None) -> dict:
  """All variables of `module` (params, params_axes) as ShapeDtypeStructs and
  axis metadata, traced without computing any value: for tree, axis and
  count checks."""
  features = _features(unpacked_batch() if batch is None else batch)
  return jax.eval_shape(lambda: module.init(
      jax.random.PRNGKey(0), **features, enable_dropout=False))


def init_params(module, batch, seed: int = 0):
  """Parameters for batches shaped like `batch`, cached across tests.

  Always concrete, even when called under a JAX transformation, so the cache
  never holds tracers.
  """
  shapes = tuple(sorted((k, v.shape) for k, v in _features(batch).items()))
  with jax.ensure_compile_time_eval():
    return _init(module, shapes, seed)


@functools.lru_cache(maxsize=None)
def _jitted_apply(module):
  return jax.jit(lambda params, features: module.apply(
      {'params': params}, **features, enable_dropout=False))


def apply(module, params, batch):
  """Teacher-forced logits, compiled (op-by-op dispatch is slow)."""
  return _jitted_apply(module)(params, _features(batch))


def adam_steps(model, params, batch, num_steps: int, learning_rate=1e-2):
  """Runs `num_steps` jitted Adam updates of `model.loss_fn` on one batch.

  Returns:
    `(params, losses)`: the updated params and the loss before each step.
  """
  optimizer = optax.adam(learning_rate)

  @jax.jit
  def step(params, state):
    (loss, _), grads = jax.value_and_grad(model.loss_fn, has_aux=True)(
        params, batch)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  state, losses = optimizer.init(params), []
  for _ in range(num_steps):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  return params, np.array(losses)
