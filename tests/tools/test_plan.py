"""Pod planner (`python -m hyperprompt_jax.plan`) and 2-D parameter sharding."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

from flax import linen as nn
import gin
import jax
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from hyperprompt_jax.data import pipeline
from hyperprompt_jax import gin_utils
from hyperprompt_jax.sharding import mesh as mesh_lib
from hyperprompt_jax.sharding import partitioning
from hyperprompt_jax.tools import plan
from hyperprompt_jax.training import optimizers
from hyperprompt_jax.training import trainer as trainer_lib

import tiny_models as tm

# make train's run, one layer per stack, on short rows.
TINY_RUN = ['--gin_file=runs/synthetic_global_tiny.gin',
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 8}",
            '--gin.BATCH_SIZE=8', '--gin.network.T5Config.num_encoder_layers=1',
            '--gin.network.T5Config.num_decoder_layers=1']


def run_plan(tmp_path, *flags):
  """`python -m hyperprompt_jax.plan` in a new process, its plan cache in
  `tmp_path`; (JSON, stdout)."""
  output = tmp_path / 'plan.json'
  result = subprocess.run(
      [sys.executable, '-m', 'hyperprompt_jax.plan', *TINY_RUN,
       f'--cache_dir={tmp_path / "cache"}', *flags, f'--output={output}'],
      capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stderr == ''  # quiet by default
  return json.loads(output.read_text()), result.stdout


def test_plan_for_eight_host_devices_in_json(tmp_path):
  """A plan on cpu:8 with the microbatches set through the run's macro, as
  train takes it. Catches --gin.NUM_MICROBATCHES refused as a macro that no
  gin file reads (the loop-free variant rebinds what reads it), a memory
  budget not compared, and an input feed measured for the wrong rows."""
  # A memory budget far below the step's needs: the plan must say so.
  # Microbatches loop: their FLOPs are scaled from a loop-free lowering.
  out, stdout = run_plan(tmp_path, '--topology=cpu:8',
                         '--gin.DATA_MESH_SIZE=4', '--gin.MODEL_MESH_SIZE=2',
                         '--gin.PARAMETER_PARTITIONING_DIMS=2',
                         '--gin.NUM_MICROBATCHES=2', '--hbm_gib=0.0001',
                         '--input_feed', '--input_feed_batches=2')
  [p] = out['plans']
  assert p['topology'] == 'cpu:8' and p['num_chips'] == 8
  assert p['mesh'] == {'data': 4, 'model': 2}
  assert p['parameter_partitioning_dims'] == 2
  assert 0 < p['state_bytes'] < p['total_bytes']
  assert p['temp_bytes'] > 0 and p['flops'] > 0
  assert p['flops_scaled_for_loops'] is True
  assert p['hbm_bytes'] == int(0.0001 * plan.GIB)
  assert p['fits'] is False
  assert p['step'] is None  # no peak rate for host CPUs
  # 2-D parameters over 'data' are gathered, their gradients reduced.
  assert p['ici_bytes']['all-gather'] > 0 and p['bytes_accessed'] > 0
  assert 'does not fit' in stdout.splitlines()[2]
  # One host reads all 8 rows of the batch.
  assert p['num_hosts'] == 1 and p['input_feed']['host_batch_size'] == 8
  assert p['input_feed']['core_seconds_per_batch'] > 0
  assert p['input_cores'] is None


def test_a_second_plan_of_the_same_program_reads_the_cache(tmp_path):
  """Catches a cache that is not written, not read, or read back with other
  numbers; and one keyed by less than the program (another batch size must
  compile anew)."""
  first, _ = run_plan(tmp_path, '--topology=cpu:1')
  second, _ = run_plan(tmp_path, '--topology=cpu:1')
  other, _ = run_plan(tmp_path, '--topology=cpu:1', '--gin.BATCH_SIZE=4')
  [first], [second], [other] = (r['plans'] for r in (first, second, other))
  assert (first['cached'], second['cached'], other['cached']) == (
      False, True, False)
  assert len(list((tmp_path / 'cache').glob('*.json'))) == 2
  for key in ('total_bytes', 'temp_bytes', 'flops', 'bytes_accessed',
              'ici_bytes', 'compile_seconds'):
    assert second[key] == first[key], key


def test_predicted_step_is_the_largest_bound():
  """v5e figures by hand: 197e12 FLOP/s, 819e9 B/s of HBM, 400e9 B/s of ICI
  both ways (200e9 out). Catches a bound divided by the wrong figure, the
  ICI's two directions counted as one way, or a negative XLA estimate
  (libtpu's overflow) taken as a bound."""
  v5e = plan.CHIPS['v5e']
  step = plan.predict_step(v5e, flops=197e12 * 0.010,
                           bytes_accessed=819e9 * 0.020,
                           ici_bytes=200e9 * 0.005, xla_seconds=-3.0)
  assert step.flops_seconds == pytest.approx(0.010)
  assert step.hbm_seconds == pytest.approx(0.020)
  assert step.ici_seconds == pytest.approx(0.005)
  assert step.xla_seconds is None
  assert (step.binds, step.seconds) == ('HBM', pytest.approx(0.020))
  assert step.mfu == pytest.approx(0.5)
  step = plan.predict_step(v5e, 197e12 * 0.010, 0, 0, xla_seconds=0.030)
  assert (step.binds, step.mfu) == ('XLA', pytest.approx(1 / 3))
  assert plan.predict_step(plan.CHIPS['cpu'], 1.0, 1.0, 1.0, None) is None


def _one_line_error(argv, monkeypatch, capsys):
  """`python -m hyperprompt_jax.plan ARGV` through the commands' error path."""
  # prepare_environment writes these; later tests must not inherit them.
  for key in ('XLA_FLAGS', 'JAX_PLATFORMS'):
    monkeypatch.setenv(key, os.environ.get(key, ''))
  # No plan cache: an earlier plan of the same program would skip the compile.
  monkeypatch.setattr(sys, 'argv', ['plan', '--verbose', '--cache_dir=', *argv])
  with pytest.raises(SystemExit) as exit_info:
    gin_utils.run_main(plan.main)
  message = str(exit_info.value.code)
  assert message.startswith('error: ') and '\n' not in message
  assert capsys.readouterr().err == ''
  return message


def test_bad_topologies_and_meshes_give_one_line(monkeypatch, capsys):
  message = _one_line_error([*TINY_RUN, '--topology=v3:2x2'], monkeypatch,
                            capsys)
  assert "unknown topology 'v3:2x2': use v4:AxBxC" in message
  message = _one_line_error([*TINY_RUN, '--topology=v4:2x2'], monkeypatch,
                            capsys)
  assert "bad topology 'v4:2x2': write v4:AxBxC" in message
  message = _one_line_error(
      [*TINY_RUN, '--topology=cpu:1', '--gin.MODEL_MESH_SIZE=2'], monkeypatch,
      capsys)
  assert ('mesh data=-1 x model=2 does not fit the 1 chips of cpu:1: set '
          '--gin.DATA_MESH_SIZE and --gin.MODEL_MESH_SIZE') in message
  if importlib.util.find_spec('libtpu') is None:
    message = _one_line_error([*TINY_RUN, '--topology=v4:2x2x1'], monkeypatch,
                              capsys)
    assert 'libtpu is not installed' in message


@pytest.mark.parametrize('scanned, hint', [
    (False, '--gin.network.T5Config.scan_layers=True'),
    (True, 'fewer examples per chip (BATCH_SIZE, or a larger slice); the '
     'layers are already scanned')])
def test_a_compile_the_compiler_refuses_is_one_line(monkeypatch, capsys,
                                                     scanned, hint):
  def refuse(*args, **kwargs):
    raise jax.errors.JaxRuntimeError('INVALID_ARGUMENT: Invalid TPU program.')
  monkeypatch.setattr(jax.stages.Lowered, 'compile', refuse)
  message = _one_line_error(
      [*TINY_RUN, '--topology=cpu:1',
       f'--gin.network.T5Config.scan_layers={scanned}'], monkeypatch, capsys)
  assert ('the compiler refused the train step of synthetic_global_tiny for '
          'cpu:1 (INVALID_ARGUMENT: Invalid TPU program.): make the program '
          f'smaller, e.g. {hint}') in message


@pytest.mark.parametrize('run', sorted(
    p.name for p in (gin_utils.DEFAULT_GIN_DIR / 'tpu').glob('*.gin')))
def test_tpu_run_files_name_a_topology_their_mesh_fits(run):
  gin_utils.parse_gin([f'tpu/{run}'], ["MODEL_DIR = '/tmp/unused'"])
  try:
    settings = plan._run_settings()  # pylint: disable=protected-access
    topology = plan.parse_topology(gin.query_parameter('%TPU_TOPOLOGY'))
  finally:
    gin.clear_config()
  assert topology.kind != 'cpu'
  data, model = settings['mesh_config'].shape(topology.num_chips)
  assert settings['train_dataset_cfg'].batch_size % data == 0
  assert topology.kind in run and f'{data * model}' in run  # e.g. v5e_8
  assert settings['model'].module.hyperprompt.variant in run


@pytest.mark.tpu_aot
def test_plan_compiles_for_a_tpu_v4_slice(tmp_path):
  pytest.importorskip('libtpu', reason='libtpu (pip install -e .[tpu]) absent')
  out, _ = run_plan(tmp_path, '--topology=v4:2x2x1')
  [p] = out['plans']
  assert p['chip'] == 'TPU v4' and p['num_chips'] == 4
  assert p['mesh'] == {'data': 4, 'model': 1}
  assert p['hbm_bytes'] == 32 * plan.GIB and p['fits'] is True
  assert 0 < p['state_bytes'] < p['total_bytes'] and p['flops'] > 0
  assert p['step']['flops_seconds'] == pytest.approx(p['flops'] / 275e12)
  assert p['step']['hbm_seconds'] == pytest.approx(
      p['bytes_accessed'] / 1200e9)


@pytest.mark.tpu_aot
def test_plan_compiles_for_a_tpu_v6e_slice(tmp_path):
  """libtpu 0.0.42 knows v6e: 4 chips of 32 GiB, 918 TFLOP/s and 1640 GB/s
  (cloud.google.com/tpu/docs/v6e). Catches v6e missing from the chip table
  or from the topology forms, or another chip's figures used for it."""
  pytest.importorskip('libtpu', reason='libtpu (pip install -e .[tpu]) absent')
  out, _ = run_plan(tmp_path, '--topology=v6e:2x2')
  [p] = out['plans']
  assert p['chip'] == 'TPU v6e' and p['num_chips'] == 4
  assert p['hbm_bytes'] == 32 * plan.GIB and p['num_hosts'] == 1
  assert p['step']['flops_seconds'] == pytest.approx(p['flops'] / 918e12)
  assert p['step']['hbm_seconds'] == pytest.approx(
      p['bytes_accessed'] / 1640e9)


@pytest.mark.tpu_aot
def test_planned_flops_of_loops_match_the_unrolled_step(tmp_path):
  """Scanned layers (remat) and microbatches: the planned FLOPs per chip are
  within 3% of the same step compiled without loops."""
  pytest.importorskip('libtpu', reason='libtpu (pip install -e .[tpu]) absent')
  two_layers = ['--topology=v4:2x2x1',
                '--gin.network.T5Config.num_encoder_layers=2',
                '--gin.network.T5Config.num_decoder_layers=2',
                "--gin.network.T5Config.remat_policy='full'"]
  flops = {}
  for name, flags in (
      ('plain', []),
      ('scanned', ['--gin.network.T5Config.scan_layers=True']),
      ('microbatched', ['--gin.trainer.TrainerConfig.num_microbatches=2'])):
    out, _ = run_plan(tmp_path, *two_layers, *flags)
    [p] = out['plans']
    assert p['flops_scaled_for_loops'] is (name != 'plain')
    flops[name] = p['flops']
  for name in ('scanned', 'microbatched'):
    assert flops[name] == pytest.approx(flops['plain'], rel=0.03), flops


# Adafactor factors dimensions of at least 8 here, so the tiny model has
# factored second moments too.
_ADAFACTOR = optimizers.Adafactor(min_dim_size_to_factor=8)


def make_trainer(mesh, parameter_partitioning_dims):
  shapes = {k: v.shape for k, v in tm.train_batch(0).items()}
  return trainer_lib.Trainer(
      tm.model('share', **tm.SHARDABLE), _ADAFACTOR,
      optimizers.Schedule(base_learning_rate=1e-2), mesh, shapes,
      trainer_lib.TrainerConfig(),
      partitioning.logical_axis_rules(
          parameter_partitioning_dims=parameter_partitioning_dims))


def train_from(trainer, state, steps):
  """`steps` updates from `state` (resharded for `trainer`): state, losses."""
  state = jax.device_put(state, trainer.state_shardings)
  losses = []
  for i in range(steps):
    batch = pipeline.to_global(tm.train_batch(i), trainer.batch_sharding)
    state, metrics = trainer.train_step(state, batch)
    losses.append(float(metrics['loss'].compute()))
  return state, losses


# Both runs in one process of 8 host devices, from the same initial state.
_TWO_D_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path[:0] = {tests!r}
    import jax
    import numpy as np
    from hyperprompt_jax.sharding import mesh as mesh_lib
    import test_plan
    assert jax.device_count() == 8
    one = test_plan.make_trainer(
        mesh_lib.MeshConfig(data=1, model=1).make_mesh(jax.devices()[:1]), 1)
    two_d = test_plan.make_trainer(
        mesh_lib.MeshConfig(data=4, model=2).make_mesh(), 2)
    init = one.init_state()
    state_one, losses_one = test_plan.train_from(one, init, 3)
    state_two_d, losses_two_d = test_plan.train_from(two_d, init, 3)
    on_data = lambda tree: sum('data' in str(x.sharding.spec)
                               for x in jax.tree.leaves(tree))
    print(json.dumps({{
        'losses': [losses_one, losses_two_d],
        'params_max_abs_diff': max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(jax.device_get(state_one.params)),
                            jax.tree.leaves(jax.device_get(state_two_d.params)))),
        'params_on_data': on_data(state_two_d.params),
        'opt_state_on_data': on_data(state_two_d.opt_state),
    }}))
""")


def test_two_d_parameter_sharding_on_eight_devices_matches_one_device():
  env = dict(os.environ, XLA_FLAGS=os.environ.get('XLA_FLAGS', '') +
             ' --xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
  script = _TWO_D_SCRIPT.format(tests=tm.script_path(__file__))
  out = subprocess.run([sys.executable, '-c', script], env=env, check=True,
                       capture_output=True, text=True).stdout
  result = json.loads(out.strip().splitlines()[-1])
  losses_one, losses_two_d = result['losses']
  np.testing.assert_allclose(losses_two_d, losses_one, rtol=1e-5)
  assert result['params_max_abs_diff'] < 1e-5
  # Parameters, and optimizer statistics shaped like them, split over 'data'.
  assert result['params_on_data'] > 0 and result['opt_state_on_data'] > 0


def _param_spec(axes, shape, rules):
  """The PartitionSpec of a parameter on a 16 x 1 mesh, as a tuple."""
  mesh = jax.sharding.AbstractMesh((16, 1), ('data', 'model'))
  sharding = nn.logical_to_mesh_sharding(P(*axes), mesh, list(rules))
  return tuple(mesh_lib.divisible_sharding(shape, sharding).spec)


def test_two_d_rules_split_conditioning_params_without_embed_over_data():
  two_d = partitioning.logical_axis_rules(parameter_partitioning_dims=2)
  up = ('layers', 'tasks', 'prompt_bottleneck', 'joined_kv')  # sep
  prompts = ('layers', 'tasks', 'prompt_length', 'joined_kv')  # direct
  down = ('layers', 'tasks', 'embed', 'prompt_bottleneck')  # sep
  assert _param_spec(up, (24, 8, 32, 4096), two_d) == (
      None, None, 'data', 'model')
  assert _param_spec(prompts, (24, 8, 16, 4096), two_d) == (
      None, None, 'data', 'model')
  # `embed` keeps 'data' where an array has both.
  assert _param_spec(down, (24, 8, 4096, 32), two_d) == (
      None, None, 'data', None)
  # A dimension that 'data' does not divide stays whole.
  assert _param_spec(prompts, (24, 8, 8, 4096), two_d) == (
      None, None, None, 'model')
  # One dimension: over 'model' only, as before.
  one = partitioning.logical_axis_rules()
  assert _param_spec(up, (24, 8, 32, 4096), one) == (None, None, None, 'model')


def test_two_d_rules_split_embed_over_data_after_batch():
  one = dict(partitioning.logical_axis_rules())
  two = partitioning.logical_axis_rules(parameter_partitioning_dims=2)
  assert one['embed'] is None and dict(two)['embed'] == 'data'
  # `batch` takes 'data' first: activations keep their batch split.
  names = [name for name, _ in two]
  assert names.index('batch') < names.index('embed')
  with pytest.raises(ValueError, match='parameter_partitioning_dims=3'):
    partitioning.logical_axis_rules(parameter_partitioning_dims=3)
