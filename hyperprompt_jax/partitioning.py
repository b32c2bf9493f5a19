"""Logical axis rules for sharding the network over a ('data', 'model') mesh."""

# Axes of the task-conditioning parameters (hyper-prompts and adapters). They
# are small, so they replicate; their head axis is `joined_kv`, sharded like the
# attention kernels, and their model axis `embed` follows the backbone's rule.
HYPERPROMPT_AXIS_RULES = (
    ('tasks', None),
    ('prompt_length', None),
    ('prompt_bottleneck', None),
    ('task_embed', None),
    ('task_mlp', None),
    ('adapter_position', None),
    ('adapter_bottleneck', None),
)

# The backbone's rules, as t5x's standard 1-D parameter partitioning.
BACKBONE_AXIS_RULES = (
    ('batch', 'data'),
    ('vocab', 'model'),
    ('embed', None),
    ('mlp', 'model'),
    ('heads', 'model'),
    ('kv', None),
    ('joined_kv', 'model'),
    ('relpos_buckets', None),
    ('abspos_buckets', None),
    ('length', None),
    ('layers', None),
    ('stack', None),
    ('mlp_activations', None),
)

# Modules holding the task-conditioning parameters.
CONDITIONING_MODULES = ('hyperprompt', 'input_prompt', 'adapters')


def logical_axis_rules(
    additional_rules: tuple[tuple[str, str | None], ...] = ()
) -> tuple[tuple[str, str | None], ...]:
  """Rules mapping every logical axis of the model to a mesh axis or None.

  `additional_rules` come first, so they override the defaults.
  """
  return tuple(additional_rules) + BACKBONE_AXIS_RULES + HYPERPROMPT_AXIS_RULES


def is_conditioning_param(path: tuple[str, ...]) -> bool:
  """Whether the parameter at `path` belongs to the task conditioning."""
  return any(name in CONDITIONING_MODULES for name in path)


def is_conditioning_path(path: str, value=None) -> bool:
  """`is_conditioning_param` for a '/'-joined path such as '/encoder/...'.

  The `filter_fn` of flax's `ModelParamTraversal`, which t5x's
  `MultiOptimizer` uses to train only the task conditioning
  (gin/t5x/tune_conditioning.gin).
  """
  del value
  return is_conditioning_param(tuple(name for name in path.split('/') if name))
