"""Shared pytest configuration for HyperPrompt-JAX."""

import importlib
import os
import shutil
import tempfile

import pytest

# One persistent compilation cache for the whole session: its in-process tests,
# its xdist workers and every `python -m hyperprompt_jax.*` they start compile
# the same tiny models many times over.
_CACHE_ENV = {
    'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
    # A size bound turns on the cache's file lock, which xdist workers and
    # subprocesses writing one directory need.
    'JAX_COMPILATION_CACHE_MAX_SIZE': str(4 << 30),
}


def pytest_configure(config):
  # The controller (or a plain run) makes the directory before xdist workers
  # start; they and all subprocesses inherit the environment.
  if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    config.jax_cache_dir = tempfile.mkdtemp(prefix='hyperprompt_jax_cache_')
    os.environ['JAX_COMPILATION_CACHE_DIR'] = config.jax_cache_dir
    os.environ.update(_CACHE_ENV)
    # Tiny test models spend their time compiling, not running: LLVM's
    # cheaper passes halve compile times, and XLA:CPU's older fusion code
    # generation takes a fifth less again.
    os.environ['XLA_FLAGS'] = ' '.join(filter(None, [
        os.environ.get('XLA_FLAGS'), '--xla_backend_optimization_level=0',
        '--xla_llvm_disable_expensive_passes=true',
        '--xla_cpu_use_fusion_emitters=false']))
  # Tests that need t5x (not on PyPI) carry this marker and skip without it.
  config.addinivalue_line(
      'markers', 't5x: needs t5x installed; skipped where it is absent.')
  config.addinivalue_line(
      'markers', 'gpu: needs a GPU visible to JAX; skipped where there is none.')
  config.addinivalue_line(
      'markers', 'tpu_aot: needs libtpu (TPU compiles); skipped where it is absent.')
  config.addinivalue_line(
      'markers', 'hf: needs torch and transformers; skipped where either is '
      'absent.')


def pytest_unconfigure(config):
  if getattr(config, 'jax_cache_dir', None):
    shutil.rmtree(config.jax_cache_dir, ignore_errors=True)


def _has_gpu() -> bool:
  import jax  # pylint: disable=g-import-not-at-top
  try:
    return bool(jax.devices('gpu'))
  except RuntimeError:
    return False


# The longest files (trainer subprocesses) go first: xdist hands out whole
# files in collection order, so one left for last would run alone.
_LONGEST_FIRST = ('test_resume_elsewhere.py', 'test_train.py', 'test_chaos.py',
                  'test_packaging.py', 'test_network.py', 'test_compare.py',
                  'test_run_lock.py', 'test_bad_input.py', 'test_ctrl_c.py',
                  'test_save_failures.py',
                  'test_bf16.py', 'test_decoding.py', 'test_scan_remat.py',
                  'test_tasks_benchmarks.py', 'test_trainer.py', 'test_plan.py',
                  'test_bench.py', 'test_multiprocess.py', 'test_preemption.py',
                  'test_training_step.py')


def _file_rank(item) -> int:
  name = item.path.name
  return (_LONGEST_FIRST.index(name) if name in _LONGEST_FIRST
          else len(_LONGEST_FIRST))


def pytest_collection_modifyitems(config, items):
  del config
  items.sort(key=_file_rank)  # Stable: each file keeps its order.
  gpu_items = [item for item in items if item.get_closest_marker('gpu')]
  if gpu_items and not _has_gpu():
    skip = pytest.mark.skip(reason='no GPU visible to JAX')
    for item in gpu_items:
      item.add_marker(skip)
  _skip_unimportable(items, 't5x', ('t5x',))
  _skip_unimportable(items, 'hf', ('torch', 'transformers'))


def _skip_unimportable(items, marker: str, modules) -> None:
  """Skips the tests marked `marker` where one of `modules` fails to import."""
  marked = [item for item in items if item.get_closest_marker(marker)]
  if not marked:
    return
  for name in modules:
    try:
      importlib.import_module(name)
    except ImportError as e:
      skip = pytest.mark.skip(reason=f'{name} is not importable: {e}')
      for item in marked:
        item.add_marker(skip)
      return
