"""HyperPrompt-JAX: HyperPrompt task conditioning for T5.1.1 in JAX/Flax."""

import pathlib

import setuptools

_ROOT = pathlib.Path(__file__).parent


def _requirements():
  lines = (_ROOT / 'requirements.txt').read_text().splitlines()
  return [l for l in lines if l and not l.startswith('#') and 'pytest' not in l]


setuptools.setup(
    name='hyperprompt-jax',
    version='0.1.0',
    description='HyperPrompt (ICML 2022) for T5.1.1 encoder-decoders in JAX/Flax.',
    long_description=(_ROOT / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    # `tasks/` holds the seqio registrations; it installs as
    # `hyperprompt_jax.tasks` so that it never shadows another `tasks` package.
    packages=['hyperprompt_jax', 'hyperprompt_jax.tasks'],
    package_dir={'hyperprompt_jax.tasks': 'tasks'},
    install_requires=_requirements(),
    extras_require={'test': ['pytest==9.2.0']},
)
