"""Rematerialised and scanned layers, and prompt slots prepended to the keys:
same losses, gradients and decodes."""

import functools

from flax import traverse_util
import jax
from jax import ad_checkpoint
import jax.numpy as jnp
import numpy as np
import pytest

from hyperprompt_jax.checkpointing import checkpoint_import
from hyperprompt_jax.checkpointing import scan_conversion
from hyperprompt_jax import export_hf
from hyperprompt_jax.layers import dense
from hyperprompt_jax.model import network
from hf_t5_files import hf_t5_tensors
from hf_t5_files import write_safetensors
import tiny_models as tm

# Scanned layers checked against the plain network, with each remat policy in
# turn (the variants alternate, which keeps one compile per variant).
SCAN_SETTINGS = (dict(scan_layers=True, remat_policy='full'),
                 dict(scan_layers=True, remat_policy='minimal'))
REMAT_SETTINGS = (dict(remat_policy='full'), dict(remat_policy='minimal'))


def _jit(fn):
  """`jax.jit`; on CPU without XLA's fusion emitters, which halves the
  compile time of these tiny networks."""
  options = ({'xla_cpu_use_fusion_emitters': False}
             if jax.default_backend() == 'cpu' else None)
  return jax.jit(fn, compiler_options=options)


def _module(variant, **settings):
  return network.Transformer(tm.t5_config(**settings), tm.hp_config(variant))


def _batch(packed=False):
  batch = tm.unpacked_batch(task_ids=(2, 0))
  return {k: jnp.asarray(v) for k, v in (tm.packed_batch(batch) if packed
                                         else batch).items()}


def _stand_in_params(module, scale=0.3):
  """The network's params tree with random values: traced, not compiled."""
  shapes = tm.variable_shapes(module)['params']
  rng = np.random.default_rng(1)
  return jax.tree.map(
      lambda s: (scale * rng.normal(size=s.shape)).astype(s.dtype), shapes)


def _loss(module, params, batch):
  logits = module.apply({'params': params}, **batch, enable_dropout=False)
  targets = batch['decoder_target_tokens']
  token_loss = -jnp.take_along_axis(jax.nn.log_softmax(logits),
                                    targets[..., None], -1)[..., 0]
  return jnp.sum(token_loss * (targets > 0))


def _check_like_plain(variant, batch, settings):
  """Loss and gradients of each of `settings` equal the plain network's,
  all in one compiled computation; scanned gradients are compared with the
  plain ones converted to scanned."""
  plain = _module(variant)
  params = _stand_in_params(plain)

  @_jit
  def losses_and_grads(params):
    results = [jax.value_and_grad(functools.partial(_loss, plain))(params,
                                                                   batch)]
    for setting in settings:
      start = (scan_conversion.scan_params(params)
               if setting.get('scan_layers') else params)
      results.append(jax.value_and_grad(functools.partial(
          _loss, _module(variant, **setting)))(start, batch))
    return results

  (loss, grads), *others = jax.device_get(losses_and_grads(params))
  for setting, (other_loss, other_grads) in zip(settings, others):
    np.testing.assert_allclose(other_loss, loss, rtol=1e-5, err_msg=setting)
    expected = traverse_util.flatten_dict(
        scan_conversion.scan_params(grads) if setting.get('scan_layers')
        else grads)
    flat = traverse_util.flatten_dict(other_grads)
    assert flat.keys() == expected.keys(), setting
    for path, value in expected.items():
      np.testing.assert_allclose(flat[path], value, rtol=1e-4, atol=1e-6,
                                 err_msg=f'{setting} {path}')


@pytest.mark.parametrize('index, variant', list(enumerate(tm.VARIANTS)))
def test_scanned_remat_layers_give_the_plain_loss_and_gradients(index,
                                                                 variant):
  """Packed rows (prompt tuning cannot pack): the scanned layers take the
  stacked prompts and adapters with the per-token routing broadcast."""
  _check_like_plain(variant, _batch(packed=variant != 'prompt_tuning'),
                    [SCAN_SETTINGS[index % len(SCAN_SETTINGS)]])


def test_remat_policies_give_the_plain_loss_and_gradients():
  """Unscanned layers, each policy (the scanned test covers every variant)."""
  _check_like_plain('global', _batch(), REMAT_SETTINGS)


@pytest.mark.parametrize('variant', tm.LAYER_PROMPT_VARIANTS)
def test_prepended_prompt_slots_give_the_plain_loss_and_gradients(variant):
  """Unpacked rows (packed ones mix tasks: always two blocks), unscanned and
  scanned with remat."""
  _check_like_plain(variant, _batch(), [
      dict(concatenate_prompt_slots=True),
      dict(concatenate_prompt_slots=True, scan_layers=True,
           remat_policy='full')])
  # The setting reaches self-attention: one concatenation each for keys and
  # values of every encoder and decoder layer.
  params = _stand_in_params(_module(variant))
  concatenations = [str(jax.make_jaxpr(functools.partial(
      _loss, _module(variant, concatenate_prompt_slots=c)))(
          params, _batch())).count(' concatenate[') for c in (False, True)]
  assert concatenations[1] - concatenations[0] == 2 * 4


def test_scanned_trees_have_a_leading_layers_axis():
  shapes = tm.variable_shapes(_module('global', scan_layers=True))
  encoder = shapes['params']['encoder']
  assert 'layers_0' not in encoder
  assert encoder['layers']['attention']['query']['kernel'].shape == (2, 16,
                                                                     16)
  assert 'hyperprompt' in encoder  # Stack-wide, outside the scan.
  axes = shapes['params_axes']['decoder']['layers']['mlp']['wi_0']
  assert axes['kernel_axes'].names == ('layers', 'embed', 'mlp')


def test_conversion_round_trips_exactly():
  params = _stand_in_params(_module('adapter'))
  scanned = scan_conversion.scan_params(params)
  shapes = tm.variable_shapes(_module('adapter', scan_layers=True))
  assert jax.tree.map(lambda x: (x.shape, x.dtype), scanned) == jax.tree.map(
      lambda x: (x.shape, x.dtype), shapes['params'])
  back = scan_conversion.unscan_params(scanned)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    assert a.dtype == b.dtype and np.array_equal(a, b)
  # Params axes convert too (their layer count is the model's).
  plain_axes = tm.variable_shapes(_module('adapter'))['params_axes']
  assert scan_conversion.scan_params(plain_axes) == shapes['params_axes']
  assert scan_conversion.unscan_params(
      shapes['params_axes'], num_layers={'encoder': 2, 'decoder': 2}) == (
          plain_axes)


@pytest.mark.parametrize('policy, saved', [('full', 0), ('minimal', 2)])
def test_minimal_remat_keeps_the_projections_outputs(capsys, policy, saved):
  """'minimal' saves the outputs of DenseGeneral's (custom-VJP) matmuls."""
  x, w = jnp.ones((2, 4, 8)), jnp.ones((8, 8))
  layer = lambda x, w: jnp.tanh(dense.matmul(jnp.tanh(dense.matmul(x, w)),
                                             w)).sum()
  ad_checkpoint.print_saved_residuals(
      jax.checkpoint(layer, policy=network.REMAT_POLICIES[policy]), x, w)
  assert capsys.readouterr().out.count('output of custom_vjp_call') == saved


def test_unknown_remat_policy_names_the_allowed_ones():
  with pytest.raises(ValueError, match="'some'.*none, full, minimal"):
    tm.t5_config(remat_policy='some')


@pytest.mark.parametrize('variant, decoders', [
    ('global', ('greedy', 'beam')), ('hyperformer', ('greedy',))])
def test_scanned_cached_decoding_equals_unscanned(variant, decoders):
  """Decodes and their scores, of the same weights: the scanned cache holds
  the layers' keys, values and prompts, and beam search reorders it."""
  models = [tm.model(module=_module(variant, **settings))
            for settings in ({}, dict(scan_layers=True))]
  batch = {k: jnp.asarray(v) for k, v in
           tm.unpacked_batch(task_ids=(0, 2), dec_len=6).items()}
  params = _stand_in_params(models[0].module)

  @_jit
  def decodes(params):
    out = []
    for model, p in zip(models, (params,
                                 scan_conversion.scan_params(params))):
      out.append([model.predict_batch(p, batch, decoder=decoder, return_scores=True)
                  for decoder in decoders])
    return out

  unscanned, scanned = decodes(params)
  for (tokens, scores), (other_tokens, other_scores) in zip(unscanned,
                                                             scanned):
    np.testing.assert_array_equal(other_tokens, tokens)
    np.testing.assert_allclose(other_scores, scores, rtol=1e-5, atol=1e-5)


def test_unscanned_checkpoints_import_into_scanned_models(tmp_path):
  """A HF T5.1.1 checkpoint (unscanned) restores into a scanned model; its
  Hugging Face export (unscanned again) holds the checkpoint's tensors."""
  tensors = hf_t5_tensors()
  write_safetensors(tmp_path / 'model.safetensors', tensors)
  initial = _stand_in_params(_module('global', scan_layers=True))
  restored = checkpoint_import.restore_pretrained(initial, tmp_path)
  expected = scan_conversion.scan_params(
      checkpoint_import.params_from_hf_t5(tensors))
  flat = traverse_util.flatten_dict(restored)
  for path, value in traverse_util.flatten_dict(initial).items():
    source = (value if 'hyperprompt' in path else
              traverse_util.flatten_dict(expected)[path])
    np.testing.assert_array_equal(flat[path], source, '/'.join(path))
  # And back: a scanned tree restores into an unscanned model.
  unscanned = checkpoint_import.merge_pretrained(
      _stand_in_params(_module('global')), restored)
  assert jax.tree.all(jax.tree.map(
      np.array_equal, unscanned, scan_conversion.unscan_params(restored)))
  backbone, conditioning = export_hf.split_params(restored)
  assert backbone.keys() == tensors.keys()
  for key, value in tensors.items():
    np.testing.assert_array_equal(backbone[key], value, key)
  assert conditioning and all(k.startswith(('encoder/hyperprompt',
                                            'decoder/hyperprompt'))
                              for k in conditioning)


def test_stacked_lazy_arrays_read_only_the_layers_a_slice_covers():
  reads = []

  def layer(i):
    value = np.arange(6, dtype=np.float32).reshape(2, 3) + 10 * i
    return checkpoint_import.LazyArray(
        value.shape, lambda index: reads.append(i) or value[index])

  stacked = checkpoint_import.LazyArray.stacked([layer(i) for i in range(3)])
  assert stacked.shape == (3, 2, 3)
  part = stacked.read((slice(1, 3), slice(0, 1), slice(None)))
  np.testing.assert_array_equal(part, [[[10, 11, 12]], [[20, 21, 22]]])
  assert reads == [1, 2]
  np.testing.assert_array_equal(stacked.layer(2).numpy(), layer(2).numpy())
