"""Pieces shared by the hypernetworks of `global` and `hyperformer`.

Both turn embeddings of the task, the layer (and, for `hyperformer`, the
adapter position) into a projection `I = MLP([k_tau; z_m; ...])` (He et al.,
2022; Karimi Mahabadi et al., 2021) from which they generate kernels.
"""

from collections.abc import Callable, Sequence

from flax import linen as nn
from flax.linen import partitioning as nn_partitioning
import jax.numpy as jnp


def param(name: str, init: Callable, shape: tuple[int, ...],
          axes: tuple[str, ...], dtype: jnp.dtype) -> jnp.ndarray:
  """A float32 parameter of the calling module with logical `axes`, as `dtype`."""
  return jnp.asarray(
      nn_partitioning.param_with_axes(name, init, shape, jnp.float32,
                                      axes=axes), dtype)


def _concat_combinations(embeddings: Sequence[jnp.ndarray]) -> jnp.ndarray:
  """`[n_1, t], ..., [n_k, t]` -> `[n_1, ..., n_k, k t]`."""
  shape = tuple(e.shape[0] for e in embeddings)
  parts = []
  for i, e in enumerate(embeddings):
    index = tuple(slice(None) if j == i else None for j in range(len(shape)))
    parts.append(jnp.broadcast_to(e[index], shape + e.shape[-1:]))
  return jnp.concatenate(parts, axis=-1)


def _dense(x, features, name, axes, kernel_init, dtype):
  kernel = param(f'{name}_kernel', kernel_init, (x.shape[-1], features), axes,
                 dtype)
  bias = param(f'{name}_bias', nn.initializers.zeros, (features,), axes[-1:],
               dtype)
  return x @ kernel + bias


def task_projection(tables: Sequence[tuple[str, int, str]], embed_dim: int,
                    hidden_dim: int, embedding_init: Callable,
                    kernel_init: Callable, dtype: jnp.dtype) -> jnp.ndarray:
  """`I = W_2 relu(W_1 [e_1; ...; e_k] + b_1) + b_2` for every combination.

  Parameters, created in this order: one embedding table `name [n, t]` with
  axes (axis, task_embed) per entry of `tables`; then
  `task_mlp_hidden_{kernel [k t, h], bias [h]}` with axes (task_embed,
  task_mlp) and `task_mlp_out_{kernel [h, t], bias [t]}` with axes (task_mlp,
  task_embed).

  Args:
    tables: `(name, n, axis)` of each embedding table, e.g.
      `('task_embedding', T, 'tasks')` then `('layer_embedding', M, 'layers')`.
    embed_dim: t, the width of the embeddings and of `I`.
    hidden_dim: h.
    embedding_init: initializer of the tables.
    kernel_init: initializer of both MLP kernels.
    dtype: computation dtype.

  Returns:
    `[n_1, ..., n_k, t]`.
  """
  embeddings = [param(name, embedding_init, (size, embed_dim),
                      (axis, 'task_embed'), dtype)
                for name, size, axis in tables]
  hidden = nn.relu(_dense(_concat_combinations(embeddings), hidden_dim,
                          'task_mlp_hidden', ('task_embed', 'task_mlp'),
                          kernel_init, dtype))
  return _dense(hidden, embed_dim, 'task_mlp_out', ('task_mlp', 'task_embed'),
                kernel_init, dtype)
