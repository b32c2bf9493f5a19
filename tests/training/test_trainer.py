"""Trainer: frozen backbone, microbatching, and 8-device SPMD vs 1 device."""

import json
import os
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from hyperprompt_jax.data import pipeline
from hyperprompt_jax.sharding import mesh as mesh_lib
from hyperprompt_jax.sharding import partitioning
from hyperprompt_jax.training import optimizers
from hyperprompt_jax.training import train_loop
from hyperprompt_jax.training import trainer as trainer_lib
import tiny_models as tm

def make_trainer(mesh_config=mesh_lib.MeshConfig(), **config):
  shapes = {k: v.shape for k, v in tm.train_batch(0).items()}
  return trainer_lib.Trainer(
      tm.model('share', **tm.SHARDABLE), optimizers.Adafactor(),
      optimizers.Schedule(base_learning_rate=1e-2), mesh_config.make_mesh(),
      shapes, trainer_lib.TrainerConfig(**config))


def run_steps(trainer, steps):
  state = trainer.init_state()
  losses = []
  for i in range(steps):
    state, metrics = trainer.train_step(
        state, pipeline.to_global(tm.train_batch(i), trainer.batch_sharding))
    losses.append(float(metrics['loss'].compute()))
  return state, losses


def flat(params):
  return {tuple(str(k.key) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}


def test_frozen_backbone_is_bit_identical_and_prompts_train():
  trainer = make_trainer(tune='conditioning')
  before = flat(jax.device_get(trainer.init_state().params))
  after = flat(jax.device_get(run_steps(trainer, 3)[0].params))
  conditioning = [p for p in before if partitioning.is_conditioning_param(p)]
  backbone = [p for p in before if not partitioning.is_conditioning_param(p)]
  assert conditioning and backbone
  for path in backbone:
    np.testing.assert_array_equal(before[path], after[path], err_msg=str(path))
  assert any(not np.array_equal(before[p], after[p]) for p in conditioning)


def test_frozen_mode_rejects_a_model_without_conditioning():
  shapes = {k: v.shape for k, v in tm.train_batch(0).items()}
  with pytest.raises(ValueError, match='no task-conditioning'):
    trainer_lib.Trainer(tm.model('none', **tm.SHARDABLE), optimizers.AdamW(),
                        optimizers.Schedule(), mesh_lib.MeshConfig().make_mesh(),
                        shapes, trainer_lib.TrainerConfig(tune='conditioning'))


def test_microbatches_give_the_full_batch_update():
  full_state, full_losses = run_steps(make_trainer(), 2)
  micro_state, micro_losses = run_steps(make_trainer(num_microbatches=4), 2)
  np.testing.assert_allclose(micro_losses, full_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(jax.device_get(full_state.params)),
                  jax.tree.leaves(jax.device_get(micro_state.params))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


_SHARDED_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path[:0] = {tests!r}
    import jax
    from hyperprompt_jax.sharding import mesh as mesh_lib
    import test_trainer as t
    assert jax.device_count() == 8
    trainer = t.make_trainer(mesh_lib.MeshConfig(data=2, model=4))
    state, losses = t.run_steps(trainer, 4)
    print(json.dumps({{'losses': losses,
                      'num_shardings': len(trainer.mesh.devices.flat)}}))
""")


def test_eight_devices_on_2x4_mesh_match_one_device():
  env = dict(os.environ, XLA_FLAGS=os.environ.get('XLA_FLAGS', '') +
             ' --xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  script = _SHARDED_SCRIPT.format(tests=tm.script_path(__file__))
  out = subprocess.run([sys.executable, '-c', script], env=env, check=True,
                       capture_output=True, text=True).stdout
  sharded = json.loads(out.strip().splitlines()[-1])
  assert sharded['num_shardings'] == 8
  _, losses = run_steps(make_trainer(), 4)
  np.testing.assert_allclose(sharded['losses'], losses, rtol=1e-4)


def test_logged_throughput_counts_completed_steps():
  # Steps are dispatched asynchronously: the logged time must end when the
  # steps have completed, so it agrees with the wall time of the same steps.
  host_batch = tm.train_batch(0, batch=64, length=48)
  trainer = trainer_lib.Trainer(
      tm.model('share', **tm.SHARDABLE), optimizers.Adafactor(), optimizers.Schedule(),
      mesh_lib.MeshConfig().make_mesh(),
      {k: v.shape for k, v in host_batch.items()})
  batch = pipeline.to_global(host_batch, trainer.batch_sharding)
  state, metrics = trainer.train_step(trainer.init_state(), batch)
  jax.block_until_ready(metrics)  # compiled
  num_steps = 20
  start = time.time()
  window = train_loop.MetricWindow()
  for _ in range(num_steps):
    state, metrics = trainer.train_step(state, batch)
    window.add(metrics)
  summary = window.summary()
  wall = time.time() - start
  assert summary['step_time_seconds'] * num_steps == pytest.approx(wall, rel=0.05)
  assert summary['steps_per_second'] == pytest.approx(num_steps / wall, rel=0.05)
  tokens = num_steps * (host_batch['decoder_target_tokens'] > 0).sum()
  assert summary['tokens_per_second'] == pytest.approx(tokens / wall, rel=0.05)
