"""Logical axis rules for sharding the network over a ('data', 'model') mesh.

`logical_axis_rules` is gin-configurable: `parameter_partitioning_dims = 2`
(macro `PARAMETER_PARTITIONING_DIMS` in gin/runs/base.gin) shards parameters
and optimizer state over 'data' as well as 'model', as t5x's
`standard_logical_axis_rules(parameter_partitioning_dims=2)` does.
"""

import gin

# Axes of the task-conditioning parameters (hyper-prompts and adapters). They
# are small, so they replicate; their head axis is `joined_kv`, sharded like the
# attention kernels, and their model axis `embed` follows the backbone's rule
# (see also CONDITIONING_DATA_AXIS_RULES).
HYPERPROMPT_AXIS_RULES = (
    ('tasks', None),
    ('prompt_length', None),
    ('prompt_bottleneck', None),
    ('task_embed', None),
    ('task_mlp', None),
    ('adapter_position', None),
    ('adapter_bottleneck', None),
)

# Where the model axis `embed` goes, by number of parameter partitioning
# dimensions: 1 replicates it (weights split over 'model' only); 2 splits it
# over 'data' too (fully sharded weights). Rules apply in order and each mesh
# axis once per array: `batch` comes first, so activations `[batch, length,
# embed]` keep 'data' for the batch and leave `embed` whole.
EMBED_AXIS_RULES = {1: (('embed', None),), 2: (('embed', 'data'),)}

# With parameters split over 'data' too, the conditioning parameters without
# an `embed` axis split over 'data' along another one: `sep`'s up-projections
# `[layers, tasks, prompt_bottleneck, joined_kv]` and `direct`'s prompts
# `[layers, tasks, prompt_length, joined_kv]` (replicated, they were 0.8 GiB a
# chip at XXL). They come after `embed`, which keeps 'data' where an array
# has both; `mesh.param_shardings` leaves a dimension whole where 'data' does
# not divide it.
CONDITIONING_DATA_AXIS_RULES = {
    1: (), 2: (('prompt_bottleneck', 'data'), ('prompt_length', 'data'))}

# The backbone's rules, as t5x's standard rules, with `embed` between
# BACKBONE_AXIS_RULES_HEAD and BACKBONE_AXIS_RULES_TAIL.
BACKBONE_AXIS_RULES_HEAD = (
    ('batch', 'data'),
    ('vocab', 'model'),
)
BACKBONE_AXIS_RULES_TAIL = (
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


@gin.configurable(module='hyperprompt_jax.sharding.partitioning')
def logical_axis_rules(
    additional_rules: tuple[tuple[str, str | None], ...] = (),
    parameter_partitioning_dims: int = 1,
) -> tuple[tuple[str, str | None], ...]:
  """Rules mapping every logical axis of the model to a mesh axis or None.

  Args:
    additional_rules: come first, so they override the defaults.
    parameter_partitioning_dims: 1 shards parameters (and the optimizer
      statistics shaped like them) over 'model' only; 2 over 'data' as well,
      for models whose weights do not fit a chip divided by 'model' alone.
  """
  if parameter_partitioning_dims not in EMBED_AXIS_RULES:
    raise ValueError(
        f'parameter_partitioning_dims={parameter_partitioning_dims}: use 1 '
        "(parameters split over 'model') or 2 (over 'data' and 'model')")
  return (tuple(additional_rules) + BACKBONE_AXIS_RULES_HEAD +
          EMBED_AXIS_RULES[parameter_partitioning_dims] +
          CONDITIONING_DATA_AXIS_RULES[parameter_partitioning_dims] +
          BACKBONE_AXIS_RULES_TAIL + HYPERPROMPT_AXIS_RULES)


def key_names(path) -> tuple[str, ...]:
  """A leaf's `jax.tree_util` key path as names: dict keys, attribute names
  and sequence indices, e.g. `('encoder', 'layers_0', 'mlp', 'wi', 'kernel')`
  or `('opt_state', '0', 'count')`."""
  return tuple(next((str(getattr(k, attr)) for attr in ('key', 'name', 'idx')
                     if hasattr(k, attr)), str(k)) for k in path)


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
