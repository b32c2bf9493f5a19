"""Cached decoding equals the full forward pass; prompts are computed once."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperprompt_jax.conditioning import adapter
from hyperprompt_jax.model import decoding
import tiny_models as tm

MAX_LEN = 6



def _batch(task_ids=(0, 2)):
  batch = tm.unpacked_batch(task_ids=task_ids, dec_len=MAX_LEN)
  return {k: jnp.asarray(v) for k, v in batch.items()}


def _predict(model, params, batch, **kwargs):
  """`model.predict_batch`, compiled."""
  return jax.jit(functools.partial(model.predict_batch, **kwargs))(params,
                                                                   batch)


def _full_pass(model, params, batch, decoder_inputs):
  """Logits of the whole network, task ids broadcast to the decoder."""
  return tm.apply(model.module, params, {
      'encoder_input_tokens': batch['encoder_input_tokens'],
      'decoder_input_tokens': decoder_inputs,
      'decoder_target_tokens': np.ones_like(decoder_inputs),
      'encoder_task_ids': batch['encoder_task_ids'],
      'decoder_task_ids': np.broadcast_to(batch['encoder_task_ids'][:, :1],
                                          decoder_inputs.shape)})


def _greedy_by_full_passes(model, params, batch):
  """Re-runs the whole network on the growing prefix, one token at a time."""
  size = batch['encoder_input_tokens'].shape[0]
  tokens = np.zeros((size, MAX_LEN), np.int32)
  done = np.zeros(size, bool)
  for step in range(MAX_LEN):
    decoder_inputs = np.concatenate(
        [np.zeros((size, 1), np.int32), tokens[:, :-1]], axis=1)
    logits = _full_pass(model, params, batch, decoder_inputs)
    next_token = np.where(done, 0, np.argmax(logits[:, step], -1))
    tokens[:, step] = next_token
    done |= next_token == 1
  return tokens


@pytest.mark.parametrize('variant', tm.VARIANTS)
def test_cached_decoding_logits_equal_the_full_pass(variant):
  """Teacher-forced cached steps reproduce every full-pass logit."""
  model = tm.model(variant)
  batch = {k: jnp.asarray(v) for k, v in
           tm.unpacked_batch(task_ids=(0, 2), dec_len=4).items()}
  params = tm.init_params(model.module, batch)
  # Every position a real target, as in decoding (no padding queries).
  full = np.asarray(tm.apply(model.module, params, dict(
      batch, decoder_target_tokens=jnp.ones_like(
          batch['decoder_target_tokens']))))
  length = batch['decoder_input_tokens'].shape[1]

  @jax.jit
  def cached_logits(params):
    encoded, cache = model._init_decoding(params, batch, length)  # pylint: disable=protected-access

    def step(cache, ids):
      logits, cache = model._tokens_to_logits(  # pylint: disable=protected-access
          params, encoded, batch['encoder_input_tokens'], length, ids[:, None],
          cache)
      return cache, logits  # [batch, vocab]

    cache, logits = jax.lax.scan(step, cache, batch['decoder_input_tokens'].T)
    return jnp.swapaxes(logits, 0, 1), cache

  cached, cache = cached_logits(params)
  if variant in tm.ADAPTER_VARIANTS:
    # Each layer caches its rows' kernels batch first, as beam search tiles.
    down = cache['decoder']['layers_0']['adapter_down']
    assert down.shape[:2] == (2, len(adapter.POSITIONS))  # [batch, pos, ...]
    assert not np.array_equal(down[0], down[1])  # tasks 0 and 2
  np.testing.assert_allclose(cached, full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('variant', ['none', 'global'])
def test_cached_greedy_equals_full_forward_argmax(variant):
  """predict_batch's decoding loop end to end (the cache itself is checked
  logit by logit above, for every variant)."""
  model = tm.model(variant)
  batch = _batch()
  params = tm.init_params(model.module, batch)
  cached = _predict(model, params, batch)
  np.testing.assert_array_equal(cached,
                                _greedy_by_full_passes(model, params, batch))


def _poison_hyperprompt(params):
  """NaNs in every decoder hyper-prompt parameter."""
  poisoned = jax.tree.map(lambda x: x, params)
  poisoned['decoder']['hyperprompt'] = jax.tree.map(
      lambda x: jnp.full_like(x, jnp.nan), params['decoder']['hyperprompt'])
  return poisoned


def test_decoder_prompts_are_computed_once_per_sequence():
  model = tm.model('global')
  batch = _batch()
  params = tm.init_params(model.module, batch)
  encoded, cache = jax.jit(functools.partial(
      model._init_decoding, max_decode_length=MAX_LEN))(params, batch)  # pylint: disable=protected-access
  for layer in ('layers_0', 'layers_1'):  # [batch, l, heads, head_dim]
    assert cache['decoder'][layer]['prompt_key'].shape == (2, 3, 2, 8)
  ids = jnp.zeros((2, 1), jnp.int32)
  step = jax.jit(lambda p: model._tokens_to_logits(  # pylint: disable=protected-access
      p, encoded, batch['encoder_input_tokens'], MAX_LEN, ids, cache)[0])
  # A decoding step never touches the generator: poisoning it changes nothing.
  np.testing.assert_array_equal(step(params), step(_poison_hyperprompt(params)))


def _log_likelihood(model, params, batch, tokens):
  """Full-pass log-likelihood of `tokens` up to and including the first EOS."""
  tokens = np.asarray(tokens)
  decoder_inputs = np.concatenate(
      [np.zeros((tokens.shape[0], 1), np.int32), tokens[:, :-1]], axis=1)
  logits = _full_pass(model, params, batch, decoder_inputs)
  log_probs = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)),
                                 tokens[..., None], -1)[..., 0]
  ended_before = np.cumsum(tokens == 1, axis=1) - (tokens == 1)
  return np.sum(log_probs * (ended_before == 0), axis=1)


@pytest.mark.parametrize('variant', ['global', 'prompt_tuning', 'hyperformer'])
def test_beam_scores_are_the_full_pass_likelihood_of_the_beams(variant):
  """Beam reordering of the cache (prompts included) keeps every beam exact."""
  model = tm.model(variant)
  batch = _batch()
  params = tm.init_params(model.module, batch)
  tokens, scores = _predict(model, params, batch, decoder='beam',
                                       num_decodes=3, alpha=0.0,
                                       return_scores=True)
  np.testing.assert_allclose(scores, _log_likelihood(model, params, batch,
                                                     tokens), rtol=1e-4)


def test_beam_search_scores_at_least_greedy():
  model = tm.model('sep')
  batch = _batch()
  params = tm.init_params(model.module, batch)
  _, greedy_score = _predict(model, params, batch, return_scores=True)
  _, beam_score = _predict(model, params, batch, decoder='beam',
                                      num_decodes=4, alpha=0.0,
                                      return_scores=True)
  assert np.all(np.asarray(beam_score) >= np.asarray(greedy_score) - 1e-5)


def test_sampling_is_reproducible_and_low_temperature_is_greedy():
  model = tm.model('direct')
  batch = _batch()
  params = tm.init_params(model.module, batch)
  rng = jax.random.PRNGKey(3)
  first = _predict(model, params, batch, rng=rng, decoder='sample')
  second = _predict(model, params, batch, rng=rng, decoder='sample')
  np.testing.assert_array_equal(first, second)
  cold = _predict(model, params, batch, rng=rng, decoder='sample',
                             temperature=1e-4)
  np.testing.assert_array_equal(cold, _predict(model, params, batch))


def test_brevity_penalty_and_beam_expansion():
  assert float(decoding.brevity_penalty(0.6, 1)) == pytest.approx(1.0)
  cache = {'layer': {'cached_key': jnp.arange(6).reshape(2, 3),
                     'cache_index': jnp.array(4)}}
  expanded = decoding.expand_cache_for_beams(cache, 2)
  np.testing.assert_array_equal(expanded['layer']['cached_key'][:, 0],
                                [0, 0, 3, 3])
  assert int(expanded['layer']['cache_index']) == 4


def test_unknown_decoder_is_rejected():
  model = tm.model('none')
  batch = _batch()
  params = tm.init_params(model.module, batch)
  with pytest.raises(ValueError, match='Unknown decoder'):
    _predict(model, params, batch, decoder='nucleus')


# A Markov "model" for the decoding loops alone: the next token's
# probabilities depend on the last token only (row 0 is the start).
# Tokens: 0 (start), 1 (EOS), 2 (A), 3 (B).
_EOS = 1
_MARKOV = np.array([
    [0.01, 0.37, 0.35, 0.27],  # start: EOS is the likeliest first token,
    [0.25, 0.25, 0.25, 0.25],  # (never extended: rows stop at EOS)
    [0.01, 0.01, 0.01, 0.97],  # but A B EOS is only a little less likely.
    [0.01, 0.97, 0.01, 0.01],
])


def _markov_step(ids, cache):
  """`tokens_to_logits`: log-probabilities `[batch, vocab]` of `_MARKOV` after
  `ids [batch, 1]`; the cache is a placeholder with a batch axis."""
  return jnp.log(jnp.asarray(_MARKOV, jnp.float32))[ids[:, 0]], cache


def _best_by_enumeration(alpha, max_length):
  """The best finished sequence and its score by scoring every one.

  A sequence's length counts its EOS (beam search divides the log-probability
  of `t_1 .. t_n = EOS` by `((5 + n) / 6) ** alpha`).
  """
  scored = []
  for length in range(1, max_length + 1):
    for prefix in itertools.product([0, 2, 3], repeat=length - 1):
      sequence = prefix + (_EOS,)
      log_prob = sum(np.log(_MARKOV[last, token]) for last, token in zip(
          (0,) + sequence[:-1], sequence))
      scored.append((log_prob / ((5 + length) / 6) ** alpha, sequence))
  return max(scored)


@pytest.mark.parametrize('alpha', [0.0, 0.6])
def test_beam_search_length_normalisation_picks_the_enumerated_best(alpha):
  """At alpha 0.6 (infer's default) `A B EOS` beats `EOS`, whose raw
  log-probability is higher; at alpha 0 `EOS` wins. Catches a length penalty
  that is ignored (`brevity_penalty` returning 1, alpha not passed on) or that
  counts the length without the EOS."""
  max_length, beams = 4, 2
  score, sequence = _best_by_enumeration(alpha, max_length)
  assert sequence == ((2, 3, _EOS) if alpha else (_EOS,))
  cache = {'placeholder': jnp.zeros((beams, 1))}
  tokens, scores = jax.jit(functools.partial(
      decoding.beam_search, _markov_step, batch_size=1,
      max_decode_length=max_length, eos_id=_EOS, num_beams=beams,
      alpha=alpha))(cache)
  expected = np.zeros(max_length, np.int32)
  expected[:len(sequence)] = sequence
  np.testing.assert_array_equal(tokens[0, 0], expected)
  assert float(scores[0, 0]) == pytest.approx(score, abs=1e-5)


_LOGITS = np.array([1.0, 0.2, -0.5, 0.7, -1.0, 0.0], np.float32)
_SAMPLES = 4000


def _first_token_counts(temperature, topk=0, seed=0):
  """Counts `[vocab]` of the first token of `_SAMPLES` rows sampled from
  `_LOGITS`, in one compiled call."""
  step = lambda ids, cache: (jnp.broadcast_to(
      jnp.asarray(_LOGITS), (ids.shape[0], _LOGITS.size)), cache)
  sample = jax.jit(lambda rng: decoding.temperature_sample(
      step, {'placeholder': jnp.zeros((_SAMPLES, 1))}, _SAMPLES,
      max_decode_length=1, eos_id=_EOS, rng=rng, temperature=temperature,
      topk=topk)[0])
  tokens = np.asarray(sample(jax.random.PRNGKey(seed)))[:, 0]
  return np.bincount(tokens, minlength=_LOGITS.size)


@pytest.mark.parametrize('temperature, topk', [(1.0, 0), (0.5, 0), (0.5, 3)])
def test_sampled_frequencies_follow_the_tempered_softmax(temperature, topk):
  """Frequencies over 4000 rows match `softmax(logits / temperature)` over the
  `topk` largest logits (all if 0), renormalised: a chi-square statistic
  below 30 (5 degrees of freedom at most; P(> 30) ~ 2e-5). Catches the
  temperature ignored (chi-square ~ 1600 at 0.5) and top-k not applied
  (samples outside the top 3)."""
  counts = _first_token_counts(temperature, topk)
  support = (np.argsort(-_LOGITS)[:topk] if topk else
             np.arange(_LOGITS.size))
  assert counts.sum() == counts[support].sum() == _SAMPLES
  probs = np.exp(_LOGITS[support] / temperature)
  expected = _SAMPLES * probs / probs.sum()
  assert np.sum((counts[support] - expected) ** 2 / expected) < 30


def test_temperature_zero_is_argmax():
  counts = _first_token_counts(0.0)
  assert counts[np.argmax(_LOGITS)] == _SAMPLES
