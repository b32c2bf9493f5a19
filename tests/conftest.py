"""Shared pytest configuration for HyperPrompt-JAX."""

import importlib

import pytest


def pytest_configure(config):
  # Tests that need t5x (not on PyPI) carry this marker and skip without it.
  config.addinivalue_line(
      'markers', 't5x: needs t5x installed; skipped where it is absent.')
  config.addinivalue_line(
      'markers', 'gpu: needs a GPU visible to JAX; skipped where there is none.')


def _has_gpu() -> bool:
  import jax  # pylint: disable=g-import-not-at-top
  try:
    return bool(jax.devices('gpu'))
  except RuntimeError:
    return False


def pytest_collection_modifyitems(config, items):
  del config
  gpu_items = [item for item in items if item.get_closest_marker('gpu')]
  if gpu_items and not _has_gpu():
    skip = pytest.mark.skip(reason='no GPU visible to JAX')
    for item in gpu_items:
      item.add_marker(skip)
  t5x_items = [item for item in items if item.get_closest_marker('t5x')]
  if not t5x_items:
    return
  try:
    importlib.import_module('t5x')
  except ImportError as e:
    skip = pytest.mark.skip(reason=f't5x is not importable: {e}')
    for item in t5x_items:
      item.add_marker(skip)
