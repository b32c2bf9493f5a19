"""Prompt tuning baseline: per-task soft prompts before the encoder input."""

from typing import Callable

from flax import linen as nn
from flax.linen import partitioning as nn_partitioning
import jax.numpy as jnp

from hyperprompt_jax.conditioning import routing


class InputPrompt(nn.Module):
  """Prepends the soft prompt of each row's task to its embedded input.

  Parameter: `prompts` `[tasks, l, d]` with axes (tasks, prompt_length, embed).

  Attributes:
    num_tasks: T.
    prompt_length: l prompt tokens.
    prompt_init: initializer of the prompts.
    dtype: dtype of the output.
  """

  num_tasks: int
  prompt_length: int
  prompt_init: Callable
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, embedded: jnp.ndarray,
               row_task_ids: jnp.ndarray) -> jnp.ndarray:
    """`[batch, length, d]`, `[batch]` -> `[batch, l + length, d]`."""
    prompts = nn_partitioning.param_with_axes(
        'prompts', self.prompt_init,
        (self.num_tasks, self.prompt_length, embedded.shape[-1]), jnp.float32,
        axes=('tasks', 'prompt_length', 'embed'))
    rows = routing.route_input_prompts(jnp.asarray(prompts, self.dtype),
                                       row_task_ids)
    return jnp.concatenate([rows, embedded.astype(self.dtype)], axis=1)
