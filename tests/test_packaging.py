"""The package as users install it: a wheel, used from outside the checkout."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from hyperprompt_jax import gin_utils
from hyperprompt_jax import infer

REPO = pathlib.Path(__file__).resolve().parents[1]
# What setup.py packages; copied so that no build/ folder of the checkout
# (stale modules of an earlier layout) can slip into the wheel.
SOURCES = ('setup.py', 'README.md', 'hyperprompt_jax', 'tasks', 'gin')
FIXTURE_CONFIG = REPO / 'tests' / 'fixtures' / 'config_before_subpackages.gin'


def _run(args, **kwargs):
  result = subprocess.run(args, capture_output=True, text=True, **kwargs)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.fixture(scope='module')
def site(tmp_path_factory):
  """The wheel of this checkout, installed without dependencies into a folder
  that goes before the test environment on PYTHONPATH."""
  source = tmp_path_factory.mktemp('source')
  for name in SOURCES:
    if (REPO / name).is_dir():
      shutil.copytree(REPO / name, source / name,
                      ignore=shutil.ignore_patterns('__pycache__'))
    else:
      shutil.copy(REPO / name, source / name)
  wheels, site = tmp_path_factory.mktemp('wheels'), tmp_path_factory.mktemp(
      'site')
  _run([sys.executable, '-m', 'pip', 'wheel', '--quiet', '--no-deps',
        '--no-build-isolation', '--wheel-dir', str(wheels), str(source)])
  (wheel,) = wheels.glob('*.whl')
  _run([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps',
        '--target', str(site), str(wheel)])
  return site


@pytest.fixture(scope='module')
def outside(tmp_path_factory, site):
  """A working directory outside the checkout, and the environment that
  imports the installed copy."""
  return (tmp_path_factory.mktemp('elsewhere'),
          dict(os.environ, PYTHONPATH=str(site)))


@pytest.fixture(scope='module')
def run_dir(outside):
  """The tiny HyperPrompt-Global run, trained for 2 steps by the installed
  copy from outside the checkout."""
  cwd, env = outside
  model_dir = cwd / 'run'
  _run([sys.executable, '-m', 'hyperprompt_jax.train',
        '--gin_file=runs/synthetic_global_tiny.gin',
        f"--gin.MODEL_DIR='{model_dir}'", '--gin.TRAIN_STEPS=2',
        '--gin.BATCH_SIZE=4', '--gin.train_loop.train.eval_dataset_cfg=None'],
       cwd=cwd, env=env)
  return model_dir


def test_wheel_holds_every_gin_file_and_the_tasks(site):
  installed = site / 'hyperprompt_jax' / 'gin'
  names = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob('*.gin'))
  assert names(installed) == names(REPO / 'gin')
  assert (site / 'hyperprompt_jax' / 'tasks' / '__init__.py').is_file()


def test_commands_use_the_installed_copy_from_any_directory(outside, site):
  cwd, env = outside
  out = _run([sys.executable, '-c',
              'import hyperprompt_jax.tasks; from hyperprompt_jax import '
              'gin_utils; print(hyperprompt_jax.tasks.__file__); '
              'print(gin_utils.DEFAULT_GIN_DIR)'], cwd=cwd, env=env).stdout
  tasks_file, gin_dir = out.split()
  assert pathlib.Path(tasks_file).is_relative_to(site)
  assert pathlib.Path(gin_dir) == site / 'hyperprompt_jax' / 'gin'
  scripts = sorted(p.name for p in (site / 'bin').glob('hyperprompt-*'))
  assert 'hyperprompt-train' in scripts and 'hyperprompt-plan' in scripts
  help_text = _run([str(site / 'bin' / 'hyperprompt-infer'), '--help'],
                   cwd=cwd, env=env).stdout
  assert 'usage: python -m hyperprompt_jax.infer' in help_text


def test_installed_copy_trains_from_outside_the_checkout(run_dir):
  assert (run_dir / 'checkpoints' / '2').is_dir()
  assert (run_dir / 'config.gin').read_text().count('hyperprompt_jax.') > 5


def test_t5x_run_file_found_on_the_installed_search_path(site):
  """t5x users pass `--gin_search_paths=<the installed hyperprompt_jax/gin>`;
  the run file and every file it includes from there are in the wheel."""
  gin_dir = site / 'hyperprompt_jax' / 'gin'
  run = (gin_dir / 't5x' / 'runs' / 'synthetic_tiny.gin').read_text()
  includes = [line.split("'")[1] for line in run.splitlines()
              if line.startswith('include ') and 'configs/' not in line]
  assert includes and all((gin_dir / i).is_file() for i in includes)


def test_run_saved_before_the_subpackages_restores(run_dir, tmp_path):
  """A run whose config.gin imports the modules by their names before the
  package had sub-packages (`from hyperprompt_jax import network`, a file
  saved by `python -m hyperprompt_jax.train` of that layout) restores and
  predicts as with its own config.gin. Catches a moved module missing from
  gin_utils' redirections."""
  old_run = tmp_path / 'old_run'
  shutil.copytree(run_dir, old_run)
  (old_run / 'config.gin').write_text(FIXTURE_CONFIG.read_text())
  inputs = ['12345', '907']
  predictions = [infer.Predictor(str(d)).predict('synthetic_reverse', inputs)
                 for d in (run_dir, old_run)]
  assert predictions[0] == predictions[1]
  assert 'from hyperprompt_jax import network' in FIXTURE_CONFIG.read_text()


def test_unreadable_run_config_is_one_line(tmp_path):
  with pytest.raises(gin_utils.GinConfigError,
                     match=r'unreadable run config .*config\.gin'):
    gin_utils.parse_run_config('from hyperprompt_jax import nowhere\n',
                               str(tmp_path / 'config.gin'))
