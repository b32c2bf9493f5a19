"""Per-task bottleneck adapters applied to every token with its own task's kernels.

An adapter maps a block's output `x` to `x + U relu(D x)` (Houlsby et al.,
2019), bias-free like every T5.1.1 projection. Kernels come per task from
`adapter_generator`; `routing.route_adapters` decides once per stack how
tokens find theirs, and `TaskAdapter` applies them in a layer.
"""

import flax
from flax import linen as nn
import jax
import jax.numpy as jnp

# Where a layer applies adapters: on the output of its self-attention block
# and of its MLP block (before the residual addition).
POSITIONS = ('attention', 'mlp')


@flax.struct.dataclass
class AdapterKernels:
  """Adapter kernels of every layer, position and task of one stack.

  Attributes:
    down: `[layers, positions, tasks, embed, adapter_dim]`.
    up: `[layers, positions, tasks, adapter_dim, embed]`.
  """
  down: jnp.ndarray
  up: jnp.ndarray


@flax.struct.dataclass
class RoutedAdapters:
  """The kernels each token of a batch uses, for every layer of one stack.

  Unpacked rows hold one task each, so every row gets its task's kernels.
  Packed rows hold several: the batch's tokens are then sorted by task and
  multiplied group by group (`jax.lax.ragged_dot`), so each token meets only
  its own task's kernels and no per-token kernel is materialised.

  A stack's kernels lead with `[layers, positions]`; `layer(i)` drops the
  layers axis (as `nn.scan` slices it, see `scan_axes`), and `position(name)`
  then the positions axis, leaving what `TaskAdapter` takes.

  Attributes:
    down: unpacked `[layers, positions, batch, embed, a]`; packed
      `[layers, positions, tasks, embed, a]`.
    up: unpacked `[layers, positions, batch, a, embed]`; packed
      `[layers, positions, tasks, a, embed]`.
    order: packed only: `[batch * length]` token indices sorted by task.
    group_sizes: packed only: `[tasks]` tokens per task.
  """
  down: jnp.ndarray
  up: jnp.ndarray
  order: jnp.ndarray | None = None
  group_sizes: jnp.ndarray | None = None

  def layer(self, index: int) -> 'RoutedAdapters':
    """The kernels of one layer (leading layers axis dropped)."""
    return self.replace(down=self.down[index], up=self.up[index])

  def position(self, name: str) -> 'RoutedAdapters':
    """One layer's kernels at one position (leading positions axis dropped)."""
    p = POSITIONS.index(name)
    return self.replace(down=self.down[p], up=self.up[p])

  def scan_axes(self) -> 'RoutedAdapters':
    """`nn.scan` in-axes: kernels scanned over layers, the routing shared."""
    return RoutedAdapters(0, 0, nn.broadcast, nn.broadcast)


class TaskAdapter(nn.Module):
  """`x + U relu(D x)` with each token's task's `D, U`; shape-preserving.

  Attributes:
    dropout_rate: dropout on the bottleneck activations.
  """

  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, kernels: RoutedAdapters,
               deterministic: bool = True) -> jnp.ndarray:
    """`[batch, length, embed]` -> same, with `kernels` of one layer and
    position (`.layer(i).position(name)`)."""
    dropout = nn.Dropout(self.dropout_rate)
    down = kernels.down.astype(x.dtype)
    up = kernels.up.astype(x.dtype)
    if kernels.order is None:
      hidden = nn.relu(jnp.einsum('bld,bda->bla', x, down))
      return x + jnp.einsum('bla,bad->bld', dropout(hidden, deterministic), up)
    tokens = x.reshape(-1, x.shape[-1])[kernels.order]
    hidden = nn.relu(jax.lax.ragged_dot(tokens, down, kernels.group_sizes))
    delta = jax.lax.ragged_dot(dropout(hidden, deterministic), up,
                               kernels.group_sizes)
    # Scatter the sorted tokens back to their places.
    delta = jnp.zeros_like(delta).at[kernels.order].set(delta)
    return x + delta.reshape(x.shape)
