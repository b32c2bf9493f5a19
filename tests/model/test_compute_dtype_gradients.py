"""Gradients taken in the compute dtype (`TrainerConfig.compute_dtype_gradients`).

`network.compute_dtype_params` casts the leaves the layers use only in the
compute dtype; the loss of the cast tree must be the same function, so its
gradient must hold the float32 gradient's values. The references are the
projection kernels of T5's layers as the architecture defines them, and the
float32 gradient of the same loss.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_models as tm
from hyperprompt_jax.sharding import partitioning

# T5.1.1's per-layer projections: self-attention (and the decoder's
# cross-attention) query/key/value/out, the gated MLP's wi_0/wi_1/wo.
_ATTENTION = {'query', 'key', 'value', 'out'}
_MLP = {'wi_0', 'wi_1', 'wo'}


def _is_layer_projection(names):
  in_layer = any(n == 'layers' or n.startswith('layers_') for n in names)
  block = names[-2] if len(names) > 1 else ''
  return in_layer and names[-1] == 'kernel' and block in _ATTENTION | _MLP


@pytest.mark.parametrize('scan_layers', [False, True])
@pytest.mark.parametrize('variant', ['global', 'adapter'])
def test_casts_exactly_the_layer_projections(variant, scan_layers):
  """Catches a cast of a leaf the network uses in float32 (logits, norms,
  embedding, the hypernetwork) or a projection left in float32."""
  model = tm.model(variant, dtype=jnp.bfloat16, scan_layers=scan_layers)
  params = tm.init_params(model.module, tm.unpacked_batch())
  cast = model.compute_dtype_params(params)
  leaves = jax.tree_util.tree_flatten_with_path(cast)[0]
  projections = 0
  for path, leaf in leaves:
    names = partitioning.key_names(path)
    if _is_layer_projection(names):
      projections += 1
      assert leaf.dtype == jnp.bfloat16, names
    else:
      assert leaf.dtype == jnp.float32, names
  # Encoder: 4 attention + 3 MLP kernels per layer; decoder: 8 + 3.
  per_layer = 7 + 11
  assert projections == per_layer * (1 if scan_layers else 2)


@pytest.mark.parametrize('scan_layers', [False, True])
def test_gradient_values_match_float32_gradient(scan_layers):
  """Catches a cast leaf whose float32 gradient is not a bfloat16 value (a
  kernel used in float32 somewhere), which would change training.

  Unscanned, the values are bit-identical. Scanned and recomputed (remat),
  XLA fuses the float32 program's casts differently and may keep excess
  precision: equal within one bfloat16 rounding of each leaf's largest value.
  """
  model = tm.model('global', dtype=jnp.bfloat16, scan_layers=scan_layers,
                   remat_policy='full' if scan_layers else 'none')
  batch = tm.train_batch(0, vocab=tm.VOCAB)
  params = tm.init_params(model.module, batch)
  loss = lambda p: model.loss_fn(p, batch)[0]
  reference = jax.grad(loss)(params)
  grads = jax.grad(loss)(model.compute_dtype_params(params))
  for (path, g), r in zip(jax.tree_util.tree_flatten_with_path(grads)[0],
                          jax.tree.leaves(reference)):
    names = str(partitioning.key_names(path))
    g, r = np.asarray(g, np.float32), np.asarray(r)
    if scan_layers:
      np.testing.assert_allclose(g, r, rtol=0, err_msg=names,
                                 atol=np.abs(r).max() * 2.0 ** -8)
    else:
      np.testing.assert_array_equal(g, r, err_msg=names)
