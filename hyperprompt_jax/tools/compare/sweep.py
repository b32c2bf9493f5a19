"""The comparison's sweep: variants x ablation values x seeds, as named runs.

A run is the trainer on the `--gin_file`s, then the variant's gin file, then
the run's own macros (`CompareConfig.gin_args`); `runs` trains the runs and
`outputs` tabulates them.
"""

import dataclasses
import itertools
import os
from typing import Optional

from hyperprompt_jax.conditioning import hyperprompt_config as hp_config

DEFAULT_OUTPUT_DIR = '/tmp/hyperprompt_jax/compare'
DEFAULT_MIXTURE = 'synthetic_prefixed_mixture'
DEFAULT_GIN_FILES = ('runs/synthetic_tiny_base.gin',)
# All variants x 3 seeds fit a 2-core CPU machine (README gives the time).
DEFAULT_STEPS = 500
DEFAULT_SEEDS = 3
CONDITIONS = ('both', 'encoder')
# Variants each ablation changes; the others run once, at the default value.
PROMPT_LENGTH_VARIANTS = (*hp_config.LAYER_PROMPT_VARIANTS, 'prompt_tuning')
CONDITION_VARIANTS = (*hp_config.LAYER_PROMPT_VARIANTS,
                      *hp_config.ADAPTER_VARIANTS)


@dataclasses.dataclass(frozen=True)
class Setting:
  """One row of the table: a variant and its ablation values.

  Attributes:
    variant: one of `hyperprompt_config.VARIANTS`.
    tune: 'all', or 'conditioning' (frozen backbone).
    prompt_length: PROMPT_LENGTH, or None for the gin files' value (and for
      variants without prompts).
    condition: 'both' stacks or the 'encoder' only (CONDITION_DECODER=False);
      None for variants without per-stack conditioning.
  """
  variant: str
  tune: str = 'all'
  prompt_length: Optional[int] = None
  condition: Optional[str] = 'both'

  @property
  def name(self) -> str:
    """e.g. `global`, `global-frozen-l4-encoder`."""
    parts = [self.variant]
    if self.tune == 'conditioning':
      parts.append('frozen')
    if self.prompt_length is not None:
      parts.append(f'l{self.prompt_length}')
    if self.condition == 'encoder':
      parts.append('encoder')
    return '-'.join(parts)

  def bindings(self) -> list[str]:
    """gin bindings of the ablation values that differ from the gin files."""
    out = []
    if self.tune != 'all':
      out.append(f"TUNE = '{self.tune}'")
    if self.prompt_length is not None:
      out.append(f'PROMPT_LENGTH = {self.prompt_length}')
    if self.condition == 'encoder':
      out.append('CONDITION_DECODER = False')
    return out


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run: a setting and a seed."""
  setting: Setting
  seed: int

  @property
  def name(self) -> str:
    return f'{self.setting.name}-seed{self.seed}'


@dataclasses.dataclass(frozen=True)
class CompareConfig:
  """What to compare, with what budget, and where.

  Attributes:
    variants: variants in table order.
    seeds: number of seeds (RANDOM_SEED 0..seeds-1).
    mixture: MIXTURE_OR_TASK_NAME of every run.
    steps: TRAIN_STEPS of every run.
    output_dir: parent of the runs' MODEL_DIRs and of the outputs.
    tunes: TUNE values (`trainer.TUNE_MODES`).
    prompt_lengths: PROMPT_LENGTH values; (None,) keeps the gin files'.
    conditions: `CONDITIONS` values.
    gin_files: the trainer's --gin_file flags before the variant's file.
    gin_bindings: the trainer's bindings, e.g. 'BATCH_SIZE = 16'.
    gin_search_paths: the trainer's --gin_search_paths.
  """
  variants: tuple[str, ...] = hp_config.VARIANTS
  seeds: int = DEFAULT_SEEDS
  mixture: str = DEFAULT_MIXTURE
  steps: int = DEFAULT_STEPS
  output_dir: str = DEFAULT_OUTPUT_DIR
  tunes: tuple[str, ...] = ('all',)
  prompt_lengths: tuple[Optional[int], ...] = (None,)
  conditions: tuple[str, ...] = ('both',)
  gin_files: tuple[str, ...] = DEFAULT_GIN_FILES
  gin_bindings: tuple[str, ...] = ()
  gin_search_paths: tuple[str, ...] = ()

  def settings(self) -> list[Setting]:
    """Every variant x ablation value, each ablation only where it applies.

    `none` always tunes everything (it has nothing else to tune).
    """
    out = []
    for variant, tune, length, condition in itertools.product(
        self.variants, self.tunes, self.prompt_lengths, self.conditions):
      setting = Setting(
          variant, tune if variant != 'none' else 'all',
          length if variant in PROMPT_LENGTH_VARIANTS else None,
          condition if variant in CONDITION_VARIANTS else None)
      if setting not in out:
        out.append(setting)
    return out

  def runs(self) -> list[Run]:
    return [Run(s, seed) for s in self.settings() for seed in range(self.seeds)]

  def model_dir(self, run: Run) -> str:
    return os.path.join(self.output_dir, run.name)

  def gin_args(self, run: Run) -> tuple[list[str], list[str]]:
    """The run's (gin files, gin bindings), in the order the trainer reads.

    The variant's file comes after the `--gin_file`s, so a file that sets the
    model (or a test's tiny one) cannot override the variant.
    """
    files = [*self.gin_files, f'variants/{run.setting.variant}.gin']
    bindings = [*self.gin_bindings,
                f"MODEL_DIR = '{self.model_dir(run)}'",
                f'RANDOM_SEED = {run.seed}',
                f"MIXTURE_OR_TASK_NAME = '{self.mixture}'",
                f'TRAIN_STEPS = {self.steps}', *run.setting.bindings()]
    return files, bindings
