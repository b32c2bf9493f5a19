"""t5x's restore transformation, called exactly as t5x.train calls it, and the
MultiOptimizer filter of the frozen backbone (no t5x needed)."""

import functools

import pytest

from hyperprompt_jax.sharding import partitioning
from hyperprompt_jax.t5x_integration import restore as t5x_restore

STATE = {'target': {'encoder': {'encoder_norm': {'scale': 1},
                                'hyperprompt': {'global_prompts': 2}}},
         'state': {'step': 0}}
PLAIN = {'target': {'encoder': {'encoder_norm': {'scale': 3}}},
         'state': {'step': 9}}


def test_plain_checkpoint_may_only_leave_conditioning_params_fresh():
  assert t5x_restore.check_backbone_restored(PLAIN, STATE) is PLAIN
  with pytest.raises(ValueError, match='lacks backbone parameter '
                     'target/encoder/encoder_norm/scale'):
    t5x_restore.check_backbone_restored({'target': {}, 'state': {}}, STATE)


def test_tensorstore_specs_are_leaves():
  spec = {'driver': 'zarr', 'kvstore': {'driver': 'file', 'path': 'x'}}
  ckpt = {'target': {'encoder': {'encoder_norm': {'scale': spec}}},
          'state': {'step': 9}}
  assert t5x_restore.check_backbone_restored(ckpt, STATE) is ckpt


@pytest.mark.parametrize('is_resuming', [False, True])
def test_the_call_t5x_train_makes(is_resuming):
  # t5x.train: `functools.partial(fn, is_resuming=True)` for MODEL_DIR's own
  # checkpoint; `fn(ckpt_state, state, is_resuming=False)` for the initial one.
  fn = functools.partial(t5x_restore.check_backbone_restored,
                         is_resuming=is_resuming)
  assert fn(PLAIN, STATE) is PLAIN
  # Resuming restores the run's own, complete checkpoint: nothing is checked.
  incomplete = {'target': {}, 'state': {'step': 5}}
  if is_resuming:
    assert fn(incomplete, STATE) is incomplete
  else:
    with pytest.raises(ValueError, match='lacks backbone parameter'):
      fn(incomplete, STATE)


def test_conditioning_path_filter_of_t5x_multi_optimizer():
  # flax's ModelParamTraversal calls filter_fn('/a/b/c', value).
  assert partitioning.is_conditioning_path('/encoder/hyperprompt/global_prompts')
  assert partitioning.is_conditioning_path('/decoder/adapters/down', None)
  assert not partitioning.is_conditioning_path(
      '/encoder/layers_0/mlp/wi_0/kernel')


def test_unscanned_checkpoint_for_a_scanned_model_says_so():
  layer = {'mlp': {'wo': {'kernel': 1}}}
  state = {'target': {'encoder': {'layers': layer}}, 'state': {'step': 0}}
  ckpt = {'target': {'encoder': {'layers_0': layer}}, 'state': {'step': 0}}
  with pytest.raises(ValueError, match='scanned layers .*convert_checkpoint '
                     '--layers=scanned'):
    t5x_restore.check_backbone_restored(ckpt, state)
