"""The paper's run files (gin/tpu/paper_*.gin), gin/tpu/large_global_v5e_4.gin
and gin/tpu/xxl_global_v5e_8.gin: their settings, and each planned on as
many host devices as its slice has chips, the model cut down."""

import itertools
import json
import re
import subprocess
import sys

import gin
import pytest

from hyperprompt_jax import gin_utils
from hyperprompt_jax.tools import plan

# paper_<benchmark>_<size>_<variant>_<slice>.gin
PAPER_RUNS = sorted(p.stem for p in (gin_utils.DEFAULT_GIN_DIR / 'tpu').glob(
    'paper_*.gin'))
# T5.1.1 shrunk to one tiny layer per stack on short rows; the mesh, the
# variant, the mixture, packing and the optimizer stay the run's.
CUT_DOWN = ['--gin.network.T5Config.num_encoder_layers=1',
            '--gin.network.T5Config.num_decoder_layers=1',
            '--gin.network.T5Config.emb_dim=16',
            '--gin.network.T5Config.num_heads=2',
            '--gin.network.T5Config.head_dim=8',
            '--gin.network.T5Config.mlp_dim=32', '--gin.BATCH_SIZE=8',
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}"]


def settings_of(gin_files):
  """The train run's settings and topology as the files bind them."""
  gin_utils.parse_gin(gin_files, ["MODEL_DIR = '/tmp/unused'"])
  try:
    return (plan._run_settings(),  # pylint: disable=protected-access
            plan.parse_topology(gin.query_parameter('%TPU_TOPOLOGY')))
  finally:
    gin.clear_config()


def _parts(run):
  """paper_<benchmark>_<size>_<variant>_<slice> -> (benchmark, size, variant)."""
  return re.fullmatch(r'paper_(\w+)_(base|large)_(global|none)_\w+',
                      run).groups()


def test_there_is_a_run_per_benchmark_size_and_variant():
  assert sorted(_parts(run) for run in PAPER_RUNS) == sorted(
      itertools.product(('glue', 'super_glue'), ('base', 'large'),
                        ('global', 'none')))


@pytest.mark.parametrize('run', PAPER_RUNS)
def test_paper_runs_train_the_benchmark_as_one_mixture(run):
  settings, topology = settings_of([f'tpu/{run}.gin'])
  benchmark, size, variant = _parts(run)
  dataset = settings['train_dataset_cfg']
  assert dataset.mixture_or_task_name == f'{benchmark}_mixture'
  assert dataset.batch_size == 128 and dataset.pack
  assert settings['model'].module.hyperprompt.variant == variant
  assert settings['total_steps'] == 300000
  assert settings['eval_period'] == 2000
  assert settings['initial_checkpoint_path'] == (
      f'gs://t5-data/pretrained_models/t5x/t5_1_1_{size}/checkpoint_1000000')
  assert settings['model'].module.config.emb_dim == {'base': 768,
                                                     'large': 1024}[size]
  data, model = settings['mesh_config'].shape(topology.num_chips)
  assert dataset.batch_size % data == 0 and topology.kind != 'cpu'


def _plan(tmp_path, chips, runs):
  """`python -m hyperprompt_jax.plan` of the run files `runs`, cut down, on
  `cpu:chips`: its JSON."""
  output = tmp_path / 'plan.json'
  result = subprocess.run(
      [sys.executable, '-m', 'hyperprompt_jax.plan',
       *[f'--run={r}' for r in runs], *CUT_DOWN, f'--topology=cpu:{chips}',
       f'--output={output}'], capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  return json.loads(output.read_text())


@pytest.mark.parametrize('chips, runs', [
    (8, [f'tpu/{r}.gin' for r in PAPER_RUNS if '_base_' in r]
     + ['tpu/xxl_global_v5e_8.gin']),
    (4, [f'tpu/{r}.gin' for r in PAPER_RUNS if '_large_' in r]
     + ['tpu/large_global_v5e_4.gin'])])
def test_run_files_plan_on_as_many_host_devices_as_their_slice(
    tmp_path, chips, runs):
  for run in runs:
    _, topology = settings_of([run])
    assert topology.num_chips == chips, run
  out = _plan(tmp_path, chips, runs)
  assert len(out['plans']) == len(runs)
  for p in out['plans']:
    variant = _parts(p['run'])[2] if p['run'].startswith('paper') else 'global'
    assert f'variant {variant} ' in out['runs'][p['run']]
    assert p['topology'] == f'cpu:{chips}' and p['num_chips'] == chips
    assert p['mesh'] == {'data': chips, 'model': 1}
    assert p['fits'] and 0 < p['state_bytes'] < p['total_bytes']
