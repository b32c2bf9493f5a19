"""The training state (step, params, optimizer state) and its shardings."""

from typing import Any

import flax.struct
import jax
import optax


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
