"""HyperPrompt-JAX: HyperPrompt task conditioning for T5.1.1 in JAX/Flax."""

import pathlib

import setuptools

_ROOT = pathlib.Path(__file__).parent

# Compatible ranges, so the package installs beside t5x's or a TPU image's
# versions (requirements.txt is the tested lock). Lower bounds: the tested
# versions for the fast-moving JAX, TensorFlow and checkpoint stacks, older
# releases with the same APIs for the rest. Upper bounds: the next release that
# may break those APIs (the next minor for 0.x packages and for TensorFlow,
# whose text ops and tensorboard follow its minor version).
INSTALL_REQUIRES = [
    'jax>=0.10.2,<0.11',
    'jaxlib>=0.10.2,<0.11',
    'flax>=0.12.8,<0.13',
    'optax>=0.2.8,<0.3',
    'orbax-checkpoint>=0.12.8,<0.13',
    'seqio>=0.0.20,<0.1',
    'gin-config>=0.5.0,<0.6',
    'tensorflow>=2.21,<2.22',
    'tensorflow-text>=2.21,<2.22',
    'tensorflow-datasets>=4.9.10,<5',
    'clu>=0.0.12,<0.1',
    'tensorboard>=2.21,<2.22',
    'numpy>=2.0,<3',
    'scipy>=1.13,<2',
    'scikit-learn>=1.5,<2',
    'ml_dtypes>=0.5,<0.7',
    'tensorstore>=0.1.86,<0.2',
    'safetensors>=0.6,<0.9',
    'etils[epath]>=1.15,<2',
    'tqdm>=4.66,<5',
    'sentencepiece>=0.2,<0.3',
    'matplotlib>=3.8,<4',
]

# `python -m hyperprompt_jax.<name>`, also installed as `hyperprompt-<name>`.
COMMANDS = ('train', 'infer', 'export_hf', 'convert_checkpoint', 'bench',
            't5x_bench', 'resume_bench', 'plan', 'compare', 'tpu_launch')

setuptools.setup(
    name='hyperprompt-jax',
    version='0.1.0',
    description='HyperPrompt (ICML 2022) for T5.1.1 encoder-decoders in JAX/Flax.',
    long_description=(_ROOT / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    # `tasks/` holds the seqio registrations; it installs as
    # `hyperprompt_jax.tasks` so that it never shadows another `tasks` package.
    # `gin/` installs as `hyperprompt_jax/gin`, where the commands and
    # `--gin_search_paths` find it from any directory.
    packages=[*setuptools.find_packages(include=['hyperprompt_jax*']),
              'hyperprompt_jax.tasks', 'hyperprompt_jax.gin'],
    package_dir={'hyperprompt_jax.tasks': 'tasks', 'hyperprompt_jax.gin': 'gin'},
    package_data={'hyperprompt_jax.gin': ['*/*.gin', '*/*/*.gin']},
    entry_points={'console_scripts': [
        f'hyperprompt-{name.replace("_", "-")} = hyperprompt_jax.cli:{name}'
        for name in COMMANDS]},
    install_requires=INSTALL_REQUIRES,
    extras_require={'test': ['pytest>=9,<10', 'pytest-xdist>=3.6,<4',
                             'filelock>=3.12'],
                    # TPU support, and the TPU compiler that
                    # `python -m hyperprompt_jax.plan` needs (no TPU needed):
                    # the libtpu that jax[tpu] 0.10.2 pins.
                    'tpu': ['libtpu==0.0.42.*']},
)
