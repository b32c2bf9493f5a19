"""Shared pytest configuration for HyperPrompt-JAX."""


def pytest_configure(config):
  # Tests that need t5x (not on PyPI) carry this marker and skip without it.
  config.addinivalue_line(
      'markers', 't5x: needs t5x installed; skipped where it is absent.')
