"""Autoregressive decoding over a key/value cache: greedy, sampling, beam."""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

# `tokens_to_logits(ids [batch, 1], cache) -> (logits [batch, vocab], cache)`.
TokensToLogits = Callable[[jnp.ndarray, Any], tuple[jnp.ndarray, Any]]
NEG_INF = np.array(-1.0e7, np.float32)


def _map_cache(fn, cache):
  """Applies `fn` to every cache array that has a batch axis.

  `fn` takes arrays `[batch, ...]`. Scanned layers (`T5Config.scan_layers`)
  keep their cache under `layers`, `[layers, batch, ...]`: `fn` maps over
  their leading axis.
  """
  def apply(path, x):
    if path[-1].key == 'cache_index':
      return x
    if any(getattr(k, 'key', None) == 'layers' for k in path):
      return jax.vmap(fn)(x)
    return fn(x)
  return jax.tree_util.tree_map_with_path(apply, cache)


def temperature_sample(tokens_to_logits: TokensToLogits, cache, batch_size: int,
                       max_decode_length: int, eos_id: int,
                       rng: jnp.ndarray | None = None,
                       temperature: float = 0.0, topk: int = 0):
  """Samples one continuation per row; `temperature=0` is greedy argmax.

  Args:
    tokens_to_logits: one decoding step.
    cache: initialised decoding cache for `batch_size` rows.
    batch_size: number of rows.
    max_decode_length: number of tokens to produce at most.
    eos_id: end-of-sequence id; a row stops after producing it.
    rng: PRNG key, needed when `temperature > 0`.
    temperature: softmax temperature.
    topk: if > 0, sample among the `topk` most likely tokens only.

  Returns:
    `(tokens [batch, max_decode_length] int32, log_probs [batch])`; tokens
    after EOS are 0.
  """
  if temperature > 0 and rng is None:
    raise ValueError('Sampling with temperature > 0 needs an rng.')
  rng = jax.random.PRNGKey(0) if rng is None else rng

  def cond(state):
    step, _, _, _, done, _, _ = state
    return (step < max_decode_length) & ~jnp.all(done)

  def body(state):
    step, tokens, last, cache, done, log_prob, rng = state
    logits, cache = tokens_to_logits(last[:, None], cache)
    logits = logits.astype(jnp.float32)
    log_probs = jax.nn.log_softmax(logits)
    rng, step_rng = jax.random.split(rng)
    if temperature > 0:
      scaled = logits / temperature
      if topk:
        cutoff = jax.lax.top_k(scaled, topk)[0][:, -1:]
        scaled = jnp.where(scaled < cutoff, NEG_INF, scaled)
      next_token = jax.random.categorical(step_rng, scaled)
    else:
      next_token = jnp.argmax(logits, axis=-1)
    next_token = jnp.where(done, 0, next_token).astype(jnp.int32)
    token_log_prob = jnp.take_along_axis(log_probs, next_token[:, None], -1)
    log_prob = log_prob + jnp.where(done, 0.0, token_log_prob[:, 0])
    tokens = tokens.at[:, step].set(next_token)
    done = done | (next_token == eos_id)
    return step + 1, tokens, next_token, cache, done, log_prob, rng

  state = (jnp.array(0), jnp.zeros((batch_size, max_decode_length), jnp.int32),
           jnp.zeros((batch_size,), jnp.int32), cache,
           jnp.zeros((batch_size,), bool), jnp.zeros((batch_size,)), rng)
  _, tokens, _, _, _, log_prob, _ = jax.lax.while_loop(cond, body, state)
  return tokens, log_prob


def brevity_penalty(alpha: float, length) -> jnp.ndarray:
  """GNMT length normalisation `((5 + length) / 6) ** alpha`."""
  return jnp.power((5.0 + length) / 6.0, alpha)


def beam_search(tokens_to_logits: TokensToLogits, cache, batch_size: int,
                max_decode_length: int, eos_id: int, num_beams: int = 4,
                alpha: float = 0.6):
  """Beam search with length normalisation.

  The cache must hold `batch_size * num_beams` rows, the beams of a row
  adjacent (see `expand_for_beams`).

  Returns:
    `(tokens [batch, beams, max_decode_length], scores [batch, beams])`,
    best first; scores are log-probabilities divided by `brevity_penalty`.
  """
  b, k, length = batch_size, num_beams, max_decode_length
  flat = lambda x: x.reshape((b * k,) + x.shape[2:])
  unflat = lambda x: x.reshape((b, k) + x.shape[1:])

  def gather_beams(x, beam_index):
    """Picks beams `[b, n]` out of `x` `[b, k, ...]`."""
    return jnp.take_along_axis(
        x, beam_index.reshape(beam_index.shape + (1,) * (x.ndim - 2)), axis=1)

  def cond(state):
    step, _, alive_log_probs, _, finished_scores, _ = state
    # Stop once no alive beam can beat the worst finished one.
    best_possible = alive_log_probs[:, 0] / brevity_penalty(alpha, length)
    worst_finished = finished_scores[:, -1]
    return (step < length) & ~jnp.all(worst_finished > best_possible)

  def body(state):
    step, alive_seqs, alive_log_probs, finished_seqs, finished_scores, cache = (
        state)
    last = jnp.where(step > 0, alive_seqs[:, :, jnp.maximum(step - 1, 0)], 0)
    logits, cache = tokens_to_logits(flat(last)[:, None], cache)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    vocab = log_probs.shape[-1]
    candidates = (alive_log_probs[:, :, None] + unflat(log_probs)).reshape(
        b, k * vocab)
    top_log_probs, top_index = jax.lax.top_k(candidates, 2 * k)
    beam_index, tokens = top_index // vocab, top_index % vocab
    top_seqs = gather_beams(alive_seqs, beam_index).at[:, :, step].set(tokens)
    ended = tokens == eos_id

    # Alive: the best k candidates that did not end.
    alive_scores = jnp.where(ended, NEG_INF, top_log_probs)
    alive_scores, keep = jax.lax.top_k(alive_scores, k)
    alive_seqs = gather_beams(top_seqs, keep)
    cache_index = gather_beams(beam_index, keep)
    cache = _map_cache(
        lambda x: flat(gather_beams(unflat(x), cache_index)), cache)

    # Finished: merge the newly ended candidates into the best k so far.
    new_scores = jnp.where(
        ended, top_log_probs / brevity_penalty(alpha, step + 1), NEG_INF)
    all_scores = jnp.concatenate([finished_scores, new_scores], axis=1)
    all_seqs = jnp.concatenate([finished_seqs, top_seqs], axis=1)
    finished_scores, best = jax.lax.top_k(all_scores, k)
    finished_seqs = gather_beams(all_seqs, best)
    return (step + 1, alive_seqs, alive_scores, finished_seqs, finished_scores,
            cache)

  # Only the first beam starts alive, so the k beams don't duplicate it.
  alive_log_probs = jnp.tile(
      jnp.array([0.0] + [float(NEG_INF)] * (k - 1)), (b, 1))
  state = (jnp.array(0), jnp.zeros((b, k, length), jnp.int32), alive_log_probs,
           jnp.zeros((b, k, length), jnp.int32), jnp.full((b, k), NEG_INF),
           cache)
  _, alive_seqs, alive_log_probs, finished_seqs, finished_scores, _ = (
      jax.lax.while_loop(cond, body, state))
  # Rows where nothing finished fall back to their alive beams.
  any_finished = jnp.any(finished_scores > NEG_INF, axis=1)
  alive_scores = alive_log_probs / brevity_penalty(alpha, length)
  seqs = jnp.where(any_finished[:, None, None], finished_seqs, alive_seqs)
  scores = jnp.where(any_finished[:, None], finished_scores, alive_scores)
  return seqs, scores


def expand_for_beams(x: jnp.ndarray, num_beams: int) -> jnp.ndarray:
  """`[batch, ...]` -> `[batch * beams, ...]`, the beams of a row adjacent."""
  return jnp.repeat(x, num_beams, axis=0)


def expand_cache_for_beams(cache, num_beams: int):
  """Tiles every batched cache array for beam search."""
  return _map_cache(lambda x: expand_for_beams(x, num_beams), cache)
