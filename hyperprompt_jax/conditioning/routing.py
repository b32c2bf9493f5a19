"""Routing: which task's prompts, adapters and input prompts each token uses.

Rows of one task (unpacked rows, or packed rows under
`HyperPromptConfig.one_task_per_row`) are routed per row, by `[batch]` ids;
packed rows that mix tasks per token, by `[batch, length]` ids. The network
decides the form once per stack (`stack_task_ids`), then routes every
conditioning of that stack with it.
"""

import jax.numpy as jnp

from hyperprompt_jax.conditioning import adapter
from hyperprompt_jax.conditioning import hyperprompt_config as hp_config
from hyperprompt_jax.layers import attention


def check_task_ids(task_ids: jnp.ndarray | None, name: str) -> jnp.ndarray:
  """Returns int32 task ids, or raises a clear error if missing or misshapen.

  Ids are `[batch]` (a task per row) or `[batch, length]` (a task per
  token). Ids outside `[0, num_tasks)` cannot be checked under jit: the
  feature converter and the task-id map guarantee the range.
  """
  if task_ids is None:
    raise ValueError(f'This HyperPrompt variant needs `{name}` [batch] or '
                     '[batch, length]; use HyperPromptEncDecFeatureConverter '
                     'to produce it.')
  if task_ids.ndim not in (1, 2):
    raise ValueError(f'`{name}` must be [batch] or [batch, length], got shape '
                     f'{task_ids.shape}.')
  return jnp.asarray(task_ids, jnp.int32)


def row_task_ids(task_ids: jnp.ndarray | None) -> jnp.ndarray | None:
  """`[batch]` task of each row of one task, from `[batch]` or `[batch, len]`
  ids (a row's first token names its task)."""
  if task_ids is None or task_ids.ndim == 1:
    return task_ids
  return task_ids[:, 0]


def decoding_task_ids(batch) -> jnp.ndarray | None:
  """`[batch]` task of each row of a batch to decode, for both stacks.

  Decoded rows are unpacked, so the feature converter gives them `task_ids`
  `[batch]`; batches that carry token ids take each row's task from the
  encoder's: a predicted batch's own `decoder_task_ids` may be all padding.
  """
  if batch.get('task_ids') is not None:
    return batch['task_ids']
  return row_task_ids(batch.get('encoder_task_ids'))


def stack_task_ids(task_ids, name: str, packed: bool,
                   hp: hp_config.HyperPromptConfig) -> jnp.ndarray:
  """`[batch]` row task ids of rows of one task, `[batch, len]` token task ids
  of packed rows that mix tasks: the form the `route_*` functions take.

  The feature converter gives rows of one task `[batch]` `task_ids`, and
  only packed rows that may mix tasks `[batch, len]` token ids; `[batch,
  len]` ids of rows of one task (hand-built batches) are reduced to their
  first token's. Unpacked rows hold one task, and so do packed rows under
  `hp.one_task_per_row`: routing them per row spares scoring every task's
  prompt slots (or applying every task's adapters) in every row.
  """
  task_ids = check_task_ids(task_ids, name)
  if not packed or hp.one_task_per_row:
    return row_task_ids(task_ids)
  if task_ids.ndim == 1:
    raise ValueError(f'Packed rows may mix tasks, so `{name}` must be '
                     f'[batch, length] (a task per token), got shape '
                     f'{task_ids.shape}; or set one_task_per_row.')
  return task_ids


def route_prompts(keys: jnp.ndarray, values: jnp.ndarray,
                  task_ids: jnp.ndarray) -> attention.Prompts:
  """Chooses which prompt slots each query token sees, in every layer.

  An unpacked row holds one task, so it gets that task's `l` slots per layer.
  Packed rows may hold several tasks: they keep every task's slots, and
  attention pairs each token with its own task's.

  Args:
    keys: `[layers, tasks, l, heads, head_dim]` from the generator.
    values: same shape.
    task_ids: `[batch]` task of each row (unpacked rows), or `[batch, length]`
      task of every token (packed rows).

  Returns:
    The stack's `attention.Prompts`: `[layers, batch, l, heads, head_dim]`
    slots (unpacked), or `[layers, tasks, ...]` slots and the token tasks
    (packed).
  """
  if task_ids.ndim == 2:
    return attention.Prompts(keys, values, task_ids)
  return attention.Prompts(keys[:, task_ids], values[:, task_ids])


def route_adapters(kernels: adapter.AdapterKernels,
                   task_ids: jnp.ndarray) -> adapter.RoutedAdapters:
  """Chooses which kernels each token uses.

  Args:
    kernels: every task's kernels of one stack.
    task_ids: `[batch]` task of each row (unpacked rows), or `[batch, length]`
      task of every token (packed rows, which may hold examples of several
      tasks).

  Returns:
    `adapter.RoutedAdapters` for `TaskAdapter`.
  """
  if task_ids.ndim == 1:
    return adapter.RoutedAdapters(kernels.down[:, :, task_ids],
                          kernels.up[:, :, task_ids])
  flat = task_ids.reshape(-1)
  num_tasks = kernels.down.shape[2]
  return adapter.RoutedAdapters(
      kernels.down, kernels.up, order=jnp.argsort(flat, stable=True),
      group_sizes=jnp.bincount(flat, length=num_tasks).astype(jnp.int32))



def route_input_prompts(prompts: jnp.ndarray,
                        row_ids: jnp.ndarray) -> jnp.ndarray:
  """Each row's soft input prompt: `[tasks, l, d]`, `[batch]` -> `[batch, l, d]`
  (prompt tuning takes unpacked rows only)."""
  return prompts[row_ids]
