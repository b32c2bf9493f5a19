"""The settings that save memory at XXL, on 8 host devices, against the
plain step.

Fully sharded state (2-D partitioning, Adafactor's factored statistics split
like their parameters), gradients accumulated over microbatches in the
sharded layout, scanned layers recomputed in the backward pass: two steps
give the parameters of the plain step (one device, one batch, no remat).
Gradients taken in the compute dtype (`compute_dtype_gradients`) give those
of float32 gradients.
"""

import functools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np

import tiny_models as tm

# The float32 comparison: the settings only reorder sums (over microbatches
# and chips), which moves parameters by float rounding, far below this.
RTOL, ATOL = 1e-5, 1e-7
# A bfloat16 network's layerwise update against its plain step's: two
# bfloat16 roundings (2**-8 each) of each leaf's largest value.
BF16_TOL = 2 * 2.0**-8

_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path[:0] = {tests!r}
    import jax
    import numpy as np
    from hyperprompt_jax.data import pipeline
    from hyperprompt_jax.sharding import mesh as mesh_lib
    from hyperprompt_jax.sharding import partitioning
    from hyperprompt_jax.training import optimizers
    from hyperprompt_jax.training import trainer as trainer_lib
    import tiny_models as tm

    def run(mesh, rules, microbatches, compute_dtype_gradients=False,
            layerwise_updates=False, **t5):
      shapes = {{k: v.shape for k, v in tm.train_batch(0).items()}}
      trainer = trainer_lib.Trainer(
          tm.model('global', **dict(tm.SHARDABLE, num_encoder_layers=2,
                                    num_decoder_layers=2, scan_layers=True,
                                    **t5)),
          optimizers.Adafactor(min_dim_size_to_factor=8),
          optimizers.Schedule(base_learning_rate=1e-2), mesh, shapes,
          trainer_lib.TrainerConfig(
              num_microbatches=microbatches,
              compute_dtype_gradients=compute_dtype_gradients,
              layerwise_updates=layerwise_updates), rules)
      state = trainer.init_state()
      for step in range(2):
        state, _ = trainer.train_step(state, pipeline.to_global(
            tm.train_batch(step), trainer.batch_sharding))
      return trainer, state

    one_device = mesh_lib.MeshConfig().make_mesh(jax.devices()[:1])
    eight = mesh_lib.MeshConfig(data=4, model=2).make_mesh()
    rules_2d = partitioning.logical_axis_rules(parameter_partitioning_dims=2)
    _, plain = run(one_device, partitioning.logical_axis_rules(), 1)
    sharded_trainer, sharded = run(eight, rules_2d, 4, remat_policy='full')
    # bfloat16, XXL-on-8's settings (one batch), gradients in float32 and in
    # the compute dtype.
    _, float32_grads = run(eight, rules_2d, 1, dtype='bfloat16',
                           remat_policy='full')
    _, compute_grads = run(eight, rules_2d, 1, compute_dtype_gradients=True,
                           dtype='bfloat16', remat_policy='full')
    # gin/tpu/xxl_global_v5e_8.gin's settings: each layer updated in the
    # backward pass, each chip's rows looked up after gathering the table.
    _, layerwise = run(eight, rules_2d, 1, layerwise_updates=True,
                       remat_policy='full', batch_sharded_lookup=True)
    _, layerwise_bf16 = run(eight, rules_2d, 1, layerwise_updates=True,
                            dtype='bfloat16', remat_policy='full',
                            batch_sharded_lookup=True)
    leaves = lambda tree: [np.asarray(x, np.float32).tolist()
                           for x in jax.tree.leaves(jax.device_get(tree))]
    paths = lambda tree: [jax.tree_util.keystr(p) for p, _ in
                          jax.tree_util.tree_flatten_with_path(tree)[0]]
    specs = lambda tree: [str(tuple(s.spec)) for s in jax.tree.leaves(tree)]
    print(json.dumps({{
        'mesh': dict(sharded_trainer.mesh.shape),
        'params': [np.asarray(x).tolist() for x in jax.tree.leaves(
            jax.device_get(plain.params))],
        'sharded_params': [np.asarray(x).tolist() for x in jax.tree.leaves(
            jax.device_get(sharded.params))],
        'float32_grads': leaves(float32_grads.params),
        'compute_grads': leaves(compute_grads.params),
        'plain_state': leaves(plain),
        'layerwise_state': leaves(layerwise),
        'float32_grads_state': leaves(float32_grads),
        'layerwise_bf16_state': leaves(layerwise_bf16),
        'opt_paths': paths(sharded.opt_state),
        'opt_specs': specs(sharded_trainer.state_shardings.opt_state),
        'param_paths': paths(sharded.params),
        'param_specs': specs(sharded_trainer.param_shardings),
    }}))
""")


@functools.cache
def _run_on_eight_devices():
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=os.environ.get(
      'XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8')
  script = _SCRIPT.format(tests=tm.script_path(__file__))
  out = subprocess.run([sys.executable, '-c', script], env=env, check=True,
                       capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def test_sharded_microbatched_remat_steps_equal_the_plain_step():
  """Catches an accumulation that drops, repeats or misweights a
  microbatch's gradients, or loses a chip's share of them when summed in
  the sharded layout, and factored statistics split along the axis they
  average out (their parameter's other axis must keep its split)."""
  out = _run_on_eight_devices()
  assert out['mesh'] == {'data': 4, 'model': 2}
  for plain, sharded in zip(out['params'], out['sharded_params'],
                            strict=True):
    np.testing.assert_allclose(sharded, plain, rtol=RTOL, atol=ATOL)
  assert any(not np.allclose(p, 0) for p in out['params'])

  specs = dict(zip(out['opt_paths'], out['opt_specs'], strict=True))
  kernel = "['encoder']['layers']['mlp']['wi_0']['kernel']"
  param_spec = dict(zip(out['param_paths'], out['param_specs']))[kernel]
  # [layers, embed 16, mlp 32]: rows average out mlp, columns embed.
  assert param_spec == "(None, 'data', 'model')"
  [v_row] = [s for p, s in specs.items() if p.endswith('.v_row' + kernel)]
  [v_col] = [s for p, s in specs.items() if p.endswith('.v_col' + kernel)]
  assert (v_row, v_col) == ("(None, 'data')", "(None, 'model')")


def test_compute_dtype_gradients_train_as_float32_gradients():
  """On a bfloat16 network with XXL-on-8's settings (2-D sharding, scanned
  layers recomputed, one batch), gradients taken in the compute dtype give
  the parameters of float32 gradients, bit for bit, after two steps.
  Catches a cast, a sum or a sharding that changes the gradient."""
  out = _run_on_eight_devices()
  for float32_grads, compute_grads in zip(
      out['float32_grads'], out['compute_grads'], strict=True):
    np.testing.assert_array_equal(compute_grads, float32_grads)


def test_layerwise_updates_equal_the_plain_step():
  """Each layer updated inside the backward pass (`layerwise_updates`) and
  the batch-sharded token lookup, with XXL-on-8's sharding and scanned
  layers, give the plain step's parameters and optimizer statistics after
  two steps: in float32 to float rounding, and on a bfloat16 network within
  two bfloat16 roundings of the float32-gradient step's. Catches a layer updated with another's gradient
  or statistics, an update taken with parameters already changed, a step
  count advanced once per layer, statistics not written back, and a lookup
  that reads another chip's rows."""
  out = _run_on_eight_devices()
  for plain, layerwise in zip(out['plain_state'], out['layerwise_state'],
                              strict=True):
    np.testing.assert_allclose(layerwise, plain, rtol=RTOL, atol=ATOL)
  for plain, layerwise in zip(out['float32_grads_state'],
                              out['layerwise_bf16_state'], strict=True):
    plain, layerwise = np.asarray(plain), np.asarray(layerwise)
    scale = np.abs(plain).max(initial=0.0)
    np.testing.assert_allclose(layerwise, plain, rtol=0,
                               atol=BF16_TOL * scale)
