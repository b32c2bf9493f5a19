"""The training state (step, params, optimizer state) and its shardings."""

from typing import Any

import flax.struct
import jax
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint holds besides the data position.

  Attributes:
    step: int32 scalar, number of optimizer updates applied.
    params: the model's 'params' collection.
    opt_state: state of the optimizer built by `optimizers.build_optimizer`.
  """
  step: jax.Array
  params: Any
  opt_state: optax.OptState

  @classmethod
  def create(cls, params, tx: optax.GradientTransformation) -> 'TrainState':
    return cls(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
               opt_state=tx.init(params))

  def apply_gradients(self, grads, tx: optax.GradientTransformation,
                      trainable: Any) -> 'TrainState':
    """One optimizer update; leaves with `trainable` False are kept as is.

    Frozen leaves are returned untouched (not `p + 0`), so they stay
    bit-identical whatever their value.
    """
    updates, opt_state = tx.update(grads, self.opt_state, self.params)
    params = jax.tree.map(lambda p, u, t: optax.apply_updates(p, u) if t else p,
                          self.params, updates, trainable)
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state)


def state_shardings(abstract_state: TrainState, params_sharding: Any,
                    mesh: Mesh) -> TrainState:
  """Shardings for a `TrainState` whose params are sharded as given.

  An optimizer statistic whose key path ends with a parameter's key path and
  whose shape equals that parameter's (Adam moments, unfactored Adafactor)
  takes the parameter's sharding; the rest (factored Adafactor rows and
  columns, counters) is small and replicated.
  """
  replicated = NamedSharding(mesh, P())
  by_path = {
      path: (param.shape, sharding)
      for (path, param), sharding in zip(
          jax.tree_util.tree_flatten_with_path(abstract_state.params)[0],
          jax.tree.leaves(params_sharding))
  }

  def leaf_sharding(path, leaf):
    for start in range(len(path)):
      shape, sharding = by_path.get(path[start:], (None, None))
      if shape is not None and shape == leaf.shape:
        return sharding
    return replicated

  return TrainState(
      step=replicated, params=params_sharding,
      opt_state=jax.tree_util.tree_map_with_path(leaf_sharding,
                                                 abstract_state.opt_state))
