"""The network trains and decodes on a GPU as it does on the CPU."""

import functools

import jax
import numpy as np
import pytest

import tiny_models as tm


@pytest.mark.gpu
@pytest.mark.parametrize('variant', ['global', 'prompt_tuning'])
def test_gpu_matches_cpu_on_loss_steps_and_decoding(variant):
  model = tm.model(variant)
  batch = tm.unpacked_batch()

  def run(device):
    put = functools.partial(jax.device_put, device=device)
    features = jax.tree.map(put, batch)
    params = put(tm.init_params(model.module, batch))
    params, losses = tm.adam_steps(model, params, features, 3)
    tokens = jax.jit(model.predict_batch)(params, features)
    return losses, np.asarray(tokens)

  gpu_losses, gpu_tokens = run(jax.devices('gpu')[0])
  cpu_losses, cpu_tokens = run(jax.devices('cpu')[0])
  np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=2e-3)
  assert gpu_losses[-1] < gpu_losses[0]
  # Greedy tokens agree where the argmax is not a near tie.
  assert np.mean(gpu_tokens == cpu_tokens) > 0.9
