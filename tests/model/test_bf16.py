"""bfloat16 activations (the dtype of every real model file) stay close to
float32 for every variant: the forward pass and one training step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperprompt_jax.model import network
import tiny_models as tm



@pytest.mark.parametrize('variant', tm.VARIANTS)
def test_bf16_forward_and_gradients_follow_float32(variant):
  batch = {k: jnp.asarray(v) for k, v in tm.unpacked_batch().items()}
  f32, bf16 = tm.model(variant, dtype=jnp.float32), tm.model(variant, dtype=jnp.bfloat16)
  params = tm.init_params(f32.module, batch)  # float32 params for both.

  @jax.jit
  def run(params, batch):
    return [(m.logits(params, batch),
             jax.value_and_grad(lambda p, m=m: m.loss_fn(p, batch)[0])(params))
            for m in (f32, bf16)]

  (logits32, (loss32, grads32)), (logits16, (loss16, grads16)) = run(
      params, batch)
  # The network returns float32 logits either way; bf16 shows in rounding.
  assert not np.array_equal(logits16, logits32)
  np.testing.assert_allclose(logits16, logits32, atol=0.1, rtol=0.05)
  np.testing.assert_allclose(loss16, loss32, rtol=0.02)
  flat32, flat16 = jax.tree.leaves(grads32), jax.tree.leaves(grads16)
  assert all(g.dtype == jnp.float32 for g in flat16)  # Params stay float32.
  cosines = [float(jnp.vdot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))
             for a, b in zip(flat32, flat16) if float(jnp.linalg.norm(a)) > 0]
  assert min(cosines) > 0.95
