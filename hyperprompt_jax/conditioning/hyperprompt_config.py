"""Configuration of the task conditioning: which variant, and its sizes."""

import dataclasses
from typing import Callable

from flax import linen as nn

VARIANTS = ('none', 'share', 'sep', 'global', 'direct', 'prompt_tuning',
            'adapter', 'hyperformer')
# Variants that prepend hyper-prompts to the keys/values of self-attention.
LAYER_PROMPT_VARIANTS = ('share', 'sep', 'global', 'direct')
# Variants that add per-task bottleneck adapters after the layers' blocks.
ADAPTER_VARIANTS = ('adapter', 'hyperformer')


@dataclasses.dataclass(frozen=True)
class HyperPromptConfig:
  """How tasks condition the T5.1.1 network.

  Variants (He et al., 2022, section 3):
    none: plain multi-task T5 (the task id is ignored).
    share: global prompts `P_tau [l, d_model]` per task; one local
      HyperNetwork pair `(D, U)` per layer for keys and one for values,
      shared by all tasks: `P_K = U_K relu(D_K P_tau)`.
    sep: as `share`, but one `(D, U)` pair per task per layer.
    global: the `(D, U)` of task tau at layer m are generated from the
      layer-aware task embedding `I = MLP([k_tau; z_m])` by global
      HyperNetworks `W_D, W_U` (separate for keys and values).
    direct: per-task, per-layer key/value prompts learned directly.
    prompt_tuning: per-task soft prompts prepended to the encoder input
      embeddings (Lester et al., 2021); the whole model is still tuned.
    adapter: per-task bottleneck adapters `x + U relu(D x)` (Houlsby et al.,
      2019) on the output of the self-attention and MLP blocks of every
      conditioned layer (cross-attention untouched).
    hyperformer: the same adapters with `D, U` generated from the task
      projection `I = MLP([k_tau; z_m; p])` of task, layer and adapter
      position embeddings (HyperFormer++, Karimi Mahabadi et al., 2021).

  Defaults are this project's: `prompt_length` 16 and a bottleneck of 32 keep
  the added parameters well under 1% of T5.1.1-Base, the regime the paper
  reports; sweep them as its ablations do. `adapter_dim` 24 is HyperFormer++'s
  reduction factor 32 on T5-Base (768 / 32).

  Attributes:
    variant: one of `VARIANTS`.
    num_tasks: number of tasks T (ids `0..T-1`).
    prompt_length: prompt slots l per layer (tokens for `prompt_tuning`).
    bottleneck_dim: bottleneck b of the local HyperNetworks.
    task_embed_dim: width t of task, layer and layer-aware task embeddings.
    task_mlp_dim: hidden width of the MLP producing `I` (`global`,
      `hyperformer`).
    adapter_dim: bottleneck width a of the adapters (`adapter`,
      `hyperformer`).
    encoder: condition the encoder's layers.
    decoder: condition the decoder's layers.
    dropout_rate: dropout on the HyperNetwork and adapter bottleneck
      activations.
    one_task_per_row: packed rows hold examples of one task only, as
      `HyperPromptEncDecFeatureConverter(one_task_per_row=True)` packs them,
      so prompts and adapters are routed per row, as for unpacked rows.
      False routes every token by its own task id, for rows that mix tasks:
      every row then scores all tasks' prompt slots (or applies all tasks'
      adapters), which costs time and memory. gin/variants/hyperprompt.gin
      binds this and the converter's setting to one macro, ONE_TASK_PER_ROW
      (True); the standalone trainer checks its batches against it.
    prompt_init: initializer of global prompts and directly learned prompts.
    embedding_init: initializer of task, layer and position embeddings.
    kernel_init: initializer of HyperNetwork kernels and adapter
      down-projections (and of their generator for `hyperformer`).
    adapter_up_init: initializer of adapter up-projections (and of their
      generator for `hyperformer`). Near zero, so a fresh adapter is close to
      the identity and does not disturb a pre-trained backbone.
  """

  variant: str = 'none'
  num_tasks: int = 1
  prompt_length: int = 16
  bottleneck_dim: int = 32
  task_embed_dim: int = 32
  task_mlp_dim: int = 64
  adapter_dim: int = 24
  encoder: bool = True
  decoder: bool = True
  dropout_rate: float = 0.0
  one_task_per_row: bool = False
  prompt_init: Callable = nn.initializers.normal(stddev=1.0)
  embedding_init: Callable = nn.initializers.normal(stddev=1.0)
  kernel_init: Callable = nn.initializers.variance_scaling(
      1.0, 'fan_in', 'truncated_normal')
  adapter_up_init: Callable = nn.initializers.normal(stddev=1e-3)

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ValueError(f'Unknown HyperPrompt variant {self.variant!r}; '
                       f'choose one of {", ".join(VARIANTS)}.')
    for name in ('num_tasks', 'prompt_length', 'bottleneck_dim',
                 'task_embed_dim', 'task_mlp_dim', 'adapter_dim'):
      if getattr(self, name) < 1:
        raise ValueError(f'HyperPromptConfig.{name} must be >= 1, '
                         f'got {getattr(self, name)}.')

  @property
  def conditions_encoder(self) -> bool:
    """Whether encoder self-attention layers get hyper-prompts."""
    return self.variant in LAYER_PROMPT_VARIANTS and self.encoder

  @property
  def conditions_decoder(self) -> bool:
    """Whether decoder self-attention layers get hyper-prompts."""
    return self.variant in LAYER_PROMPT_VARIANTS and self.decoder

  @property
  def adapts_encoder(self) -> bool:
    """Whether encoder layers get task adapters."""
    return self.variant in ADAPTER_VARIANTS and self.encoder

  @property
  def adapts_decoder(self) -> bool:
    """Whether decoder layers get task adapters."""
    return self.variant in ADAPTER_VARIANTS and self.decoder

  @property
  def prompts_encoder_input(self) -> bool:
    """Whether soft prompts are prepended to the encoder input embeddings."""
    return self.variant == 'prompt_tuning'


def pack_examples(hyperprompt: HyperPromptConfig) -> bool:
  """Whether training may pack examples into rows (gin: `DatasetConfig.pack`).

  Prompt tuning prepends its prompts to whole rows, so it trains unpacked;
  deriving this from the variant keeps run files variant-agnostic.
  """
  return not hyperprompt.prompts_encoder_input
