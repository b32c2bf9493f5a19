"""t5x restore transformations, importable without t5x.

t5x calls each of `RestoreCheckpointConfig.state_transformation_fns` as
`fn(ckpt_state, state, is_resuming=...)` on nested state dicts (`target`,
`state`), `is_resuming=True` when MODEL_DIR already holds a checkpoint of the
run itself.
"""

from typing import Any, Mapping

from hyperprompt_jax.sharding import partitioning


def _flat_keys(state_dict: Mapping[str, Any], prefix: str = '') -> list[str]:
  """'/'-joined paths of the leaves, as t5x's `state_utils.flatten_state_dict`.

  A serialised TensorStore spec (a dict with a 'driver') is a leaf.
  """
  keys = []
  for name, value in state_dict.items():
    path = f'{prefix}{name}'
    if isinstance(value, Mapping) and 'driver' not in value:
      keys.extend(_flat_keys(value, f'{path}/'))
    else:
      keys.append(path)
  return keys


def check_backbone_restored(ckpt_state, state, *, is_resuming: bool = False):
  """Only task-conditioning parameters may start fresh.

  For `RestoreCheckpointConfig.state_transformation_fns` next to
  `fallback_to_scratch` (which t5x requires it with): t5x would otherwise
  silently initialise any parameter the checkpoint lacks.

  Args:
    ckpt_state: the checkpoint's state dict (`target`, `state`).
    state: the model's freshly initialised state dict.
    is_resuming: True when t5x resumes this run from its own MODEL_DIR; that
      checkpoint holds the whole model, so there is nothing to check.

  Returns:
    `ckpt_state`, unchanged.

  Raises:
    ValueError: the checkpoint lacks a backbone parameter of the model.
  """
  if is_resuming:
    return ckpt_state
  in_ckpt = set(_flat_keys(ckpt_state))
  missing = [k for k in _flat_keys(state)
             if k.startswith('target/') and k not in in_ckpt and
             not partitioning.is_conditioning_param(tuple(k.split('/')))]
  if missing:
    scanned = [k for k in missing if '/layers/' in f'{k}/']
    if scanned and any('/layers_0/' in k for k in in_ckpt):
      raise ValueError(
          f'The model has scanned layers ({scanned[0]}) but the checkpoint '
          'unscanned ones (layers_0, ...); t5x cannot restore one into the '
          'other: convert the checkpoint (python -m '
          'hyperprompt_jax.convert_checkpoint --layers=scanned) or train with '
          'network.T5Config.scan_layers = False.')
    raise ValueError(
        f'The checkpoint lacks backbone parameter {missing[0]} ({len(missing)} '
        'missing); is it a T5.1.1 checkpoint of the model size?')
  return ckpt_state
