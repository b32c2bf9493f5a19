"""Optimizers (optax Adafactor with T5 defaults, AdamW) and learning-rate schedules.

Each optimizer config is a frozen dataclass, configurable from gin, whose call
turns a schedule (and the params' logical axes, which Adafactor reads for its
per-layer statistics) into an `optax.GradientTransformation`. `build_optimizer`
adds the frozen-backbone mode: leaves whose mask is False get zero updates and
no optimizer state.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, Optional

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np
import optax

from hyperprompt_jax.sharding import mesh as mesh_lib
from hyperprompt_jax.sharding import partitioning


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Learning rate as a function of the step.

  Attributes:
    name: 'constant' (base), 'rsqrt' (T5's `base / sqrt(max(step, warmup))`,
      flat at `base / sqrt(warmup)` during warmup) or 'cosine' (linear warmup
      from 0 to base, then cosine decay to `base * final_fraction`).
    base_learning_rate: T5 fine-tuning uses 'constant' at 1e-3 with Adafactor;
      pre-training 'rsqrt' at 1.0 with 10k warmup steps.
    warmup_steps: see `name`.
    decay_steps: cosine only: steps from the start to the end of the decay
      (usually the number of training steps).
    final_fraction: cosine only.
    linear_warmup: multiply 'constant' and 'rsqrt' by min(1, step / warmup).
  """
  name: str = 'constant'
  base_learning_rate: float = 1e-3
  warmup_steps: int = 0
  decay_steps: Optional[int] = None
  final_fraction: float = 0.0
  linear_warmup: bool = False

  def __call__(self) -> optax.Schedule:
    base = self.base_learning_rate
    warmup = max(self.warmup_steps, 0)
    if self.name == 'cosine':
      if not self.decay_steps:
        raise ValueError('Schedule(name="cosine") needs decay_steps, e.g. '
                         'Schedule.decay_steps = %TRAIN_STEPS')
      return optax.warmup_cosine_decay_schedule(
          0.0, base, warmup, self.decay_steps, base * self.final_fraction)
    if self.name == 'constant':
      shape = lambda step: jnp.ones_like(step, jnp.float32)
    elif self.name == 'rsqrt':
      shape = lambda step: jax.lax.rsqrt(
          jnp.maximum(step, max(warmup, 1)).astype(jnp.float32))
    else:
      raise ValueError(f'unknown schedule {self.name!r}: use "constant", '
                       '"rsqrt" or "cosine"')

    def schedule(step):
      factor = shape(step)
      if self.linear_warmup and warmup:
        factor *= jnp.minimum(1.0, (step + 1) / warmup)
      return base * factor

    return schedule


def _factored_dims(shape: tuple[int, ...],
                   min_dim_size: int) -> Optional[tuple[int, int]]:
  """The two largest axes (second largest, largest), if both are at least
  `min_dim_size`; else None (an unfactored second moment)."""
  if len(shape) < 2:
    return None
  second, first = np.argsort(shape)[-2:]
  return (int(second), int(first)) if shape[second] >= min_dim_size else None


def scale_by_factored_rsqrt(decay_rate: float = 0.8,
                            min_dim_size_to_factor: int = 128,
                            epsilon: float = 1e-30
                            ) -> optax.GradientTransformation:
  """`optax.scale_by_factored_rms`, its `v ** -0.5` computed as `rsqrt(v)`.

  XLA lowers optax's `** -0.5` as a general power (a log and an exp per
  element); over the unfactored second moments of the hypernetworks it cost
  the tiny `global` step 8% on CPU. The state is optax's (`FactoredState`,
  made by its `init`) and the updates equal optax's to float rounding.
  """
  init = optax.scale_by_factored_rms(
      decay_rate=decay_rate, min_dim_size_to_factor=min_dim_size_to_factor,
      epsilon=epsilon).init

  def update(grads, state, params=None):
    del params
    decay = 1.0 - (state.count + 1.0).astype(jnp.float32) ** -decay_rate
    average = lambda old, new: (decay * old + (1.0 - decay) * new).astype(
        old.dtype)

    def leaf(grad, v_row, v_col, v):
      grad_sqr = grad * grad + epsilon
      dims = _factored_dims(grad.shape, min_dim_size_to_factor)
      if dims is None:
        v = average(v, grad_sqr)
        return grad * jax.lax.rsqrt(v), v_row, v_col, v
      d1, d0 = dims
      v_row = average(v_row, grad_sqr.mean(axis=d0))
      v_col = average(v_col, grad_sqr.mean(axis=d1))
      row_mean = v_row.mean(axis=d1 - (d1 > d0), keepdims=True)
      return (grad * jnp.expand_dims(jax.lax.rsqrt(v_row / row_mean), d0)
              * jnp.expand_dims(jax.lax.rsqrt(v_col), d1), v_row, v_col, v)

    treedef = jax.tree.structure(grads)
    columns = zip(*(treedef.flatten_up_to(tree) for tree in
                    (grads, state.v_row, state.v_col, state.v)))
    updates, v_row, v_col, v = (treedef.unflatten(part) for part in
                                zip(*(leaf(*c) for c in columns)))
    return updates, optax.FactoredState(optax.safe_increment(state.count),
                                        v_row, v_col, v)

  return optax.GradientTransformation(init, update)


LAYERS = 'layers'  # The logical axis whose slices get their own RMS.

LayerAxes = Mapping[tuple[str, ...], tuple[int, ...]]


def layer_axes(param_axes: Any) -> LayerAxes:
  """Each leaf's `layers` axes, by its path.

  Args:
    param_axes: the params' logical axis names, a tree of `PartitionSpec`s
      or tuples (`mesh.logical_axes(variables['params_axes'])`).
      `layers` leads a scanned stack's leaves and the per-layer
      task-conditioning leaves (e.g. `[layers, tasks, prompt_length,
      joined_kv]`).
  """
  specs = jax.tree_util.tree_flatten_with_path(
      param_axes, is_leaf=lambda x: isinstance(x, (tuple, PartitionSpec)))[0]
  return {partitioning.key_names(path):
              tuple(i for i, name in enumerate(spec) if name == LAYERS)
          for path, spec in specs}


def _layer_rms(x: jnp.ndarray, path, layer_axes_by_path: LayerAxes,
               min_rms: float = 0.0) -> jnp.ndarray:
  """RMS of the leaf `x` at `path` over every axis but its `layers` axes, at
  least `min_rms`: a scalar, or broadcastable to `x` (`layers` kept, the
  others size 1)."""
  layers = layer_axes_by_path.get(partitioning.key_names(path), ())
  if not layers:
    # A scalar, as optax's: a keepdims reduction of every leaf made XLA:CPU's
    # tiny `global` step 1.2x slower.
    mean_square = jnp.mean(jnp.square(x))
  else:
    others = tuple(i for i in range(x.ndim) if i not in layers)
    mean_square = jnp.mean(jnp.square(x), axis=others, keepdims=True)
  return jnp.maximum(jnp.sqrt(mean_square), min_rms)


def clip_by_layer_rms(threshold: float, layers: LayerAxes
                      ) -> optax.GradientTransformation:
  """`optax.clip_by_block_rms`, each layer of a leaf clipped on its own."""

  def update(updates, state, params=None):
    del params
    def clip(path, u):
      rms = _layer_rms(u, path, layers)
      return u / jnp.maximum(1.0, rms / threshold)
    return jax.tree_util.tree_map_with_path(clip, updates), state

  return optax.GradientTransformation(optax.init_empty_state, update)


def scale_by_param_layer_rms(layers: LayerAxes, min_scale: float = 1e-3
                             ) -> optax.GradientTransformation:
  """`optax.scale_by_param_block_rms`, each layer of a leaf scaled by its
  own RMS."""

  def update(updates, state, params):
    scale = lambda path, u, p: u * _layer_rms(p, path, layers, min_scale)
    return jax.tree_util.tree_map_with_path(scale, updates, params), state

  return optax.GradientTransformation(optax.init_empty_state, update)


@dataclasses.dataclass(frozen=True)
class Adafactor:
  """Adafactor with the defaults of T5 / t5x (factored second moments, no momentum).

  Factoring applies to dimensions of at least `min_dim_size_to_factor`;
  updates are clipped to RMS `clipping_threshold` and scaled by the
  parameter's RMS (`multiply_by_parameter_scale`). Given the params'
  logical axes, both RMS are taken per slice of a `layers` axis, as t5x's
  Adafactor with its logical factor rules (`layers` is a batch axis there):
  a scanned stack (`T5Config.scan_layers`) then trains as its unscanned
  layers (the factored second moments are per layer already, while the
  stack has fewer than 128 layers), and per-layer task-conditioning leaves
  as t5x trains them. Without them, one RMS per leaf (optax's).
  """
  decay_rate: float = 0.8
  clipping_threshold: Optional[float] = 1.0
  multiply_by_parameter_scale: bool = True
  momentum: Optional[float] = None
  weight_decay_rate: Optional[float] = None
  min_dim_size_to_factor: int = 128

  def __call__(self, learning_rate: optax.Schedule,
               param_axes: Any = None) -> optax.GradientTransformation:
    """The transformation; `param_axes` are the params' logical axis names
    (see `layer_axes`), None for one RMS per leaf."""
    # optax.adafactor's chain (so its state), with scale_by_factored_rsqrt
    # and per-layer RMS.
    layers = {} if param_axes is None else layer_axes(param_axes)
    tx = [scale_by_factored_rsqrt(self.decay_rate,
                                  self.min_dim_size_to_factor)]
    if self.clipping_threshold is not None:
      tx.append(clip_by_layer_rms(self.clipping_threshold, layers))
    tx.append(optax.scale_by_learning_rate(learning_rate, flip_sign=False))
    if self.multiply_by_parameter_scale:
      tx.append(scale_by_param_layer_rms(layers))
    if self.momentum is not None:
      tx.append(optax.ema(self.momentum, debias=False,
                          accumulator_dtype=jnp.float32))
    if self.weight_decay_rate is not None:
      tx.append(optax.add_decayed_weights(self.weight_decay_rate))
    tx.append(optax.scale(-1))
    return optax.chain(*tx)


@dataclasses.dataclass(frozen=True)
class AdamW:
  """AdamW with optional global-norm gradient clipping."""
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 0.01
  gradient_clip_norm: Optional[float] = 1.0

  def __call__(self, learning_rate: optax.Schedule,
               param_axes: Any = None) -> optax.GradientTransformation:
    del param_axes  # Its statistics are per element, its clipping global.
    adamw = optax.adamw(learning_rate, b1=self.b1, b2=self.b2, eps=self.eps,
                        weight_decay=self.weight_decay)
    if self.gradient_clip_norm is None:
      return adamw
    return optax.chain(optax.clip_by_global_norm(self.gradient_clip_norm), adamw)


def build_optimizer(optimizer, schedule: Schedule, trainable: Any,
                    param_axes: Any = None) -> optax.GradientTransformation:
  """The optimizer for the trainable leaves; zero updates elsewhere.

  Args:
    optimizer: an `Adafactor` or `AdamW` config.
    schedule: the learning-rate schedule.
    trainable: a pytree of bools with the structure of the params.
    param_axes: the params' logical axis names (see `layer_axes`), for
      Adafactor's per-layer RMS.

  Returns:
    A transformation whose state only holds statistics of trainable leaves.
  """
  labels = jax.tree.map(lambda t: 'trainable' if t else 'frozen', trainable)
  return optax.multi_transform(
      {'trainable': optimizer(schedule(), param_axes),
       'frozen': optax.set_to_zero()},
      labels)


def decomposes_by_layer(optimizer) -> bool:
  """Whether `optimizer` updates each layer of a stack as if it were alone
  (so it can update a layer as soon as its gradient exists): Adafactor (its
  statistics, clipping and scale are per layer) and AdamW without a global
  gradient-norm clip."""
  if isinstance(optimizer, AdamW):
    return optimizer.gradient_clip_norm is None
  return isinstance(optimizer, Adafactor)


def state_part(state: Any, template: Any) -> Any:
  """The leaves of an optimizer state at the paths of `template`'s.

  `build_optimizer` on a subtree of the params (its keys kept from the
  root) makes a state whose leaves sit at the paths of the whole state's
  leaves for those params, and whose step counts sit at the counts' paths:
  given that state's shapes as `template`, this cuts it out of `state`.
  """
  leaves = dict(jax.tree_util.tree_flatten_with_path(state)[0])
  return jax.tree_util.tree_map_with_path(lambda path, _: leaves[path],
                                          template)


def state_with(state: Any, *parts: Any) -> Any:
  """`state` with the leaves of `parts` (see `state_part`) put at their
  paths (a later part's where two have one); float0 leaves (an integer's
  cotangent) are skipped."""
  new = {}
  for part in parts:
    new.update((path, leaf) for path, leaf in
               jax.tree_util.tree_flatten_with_path(part)[0]
               if leaf.dtype != jax.dtypes.float0)
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: new.get(path, leaf), state)


# Adafactor's factored statistics of a leaf, by the field of optax's
# `FactoredState` that holds them: the index in `_factored_dims` of the axis
# they average out (rows drop the largest axis, columns the second largest).
_FACTORED_FIELDS = {'v_row': 1, 'v_col': 0}


def _statistic_spec(field: Optional[str], param_shape: tuple[int, ...],
                    param_spec: PartitionSpec,
                    shape: tuple[int, ...]) -> Optional[PartitionSpec]:
  """The spec of an optimizer statistic of a parameter, None if it is not one.

  Args:
    field: the state field that holds the statistic (e.g. 'v_row', 'mu').
    param_shape, param_spec: the parameter's shape and partition spec.
    shape: the statistic's shape.
  """
  if shape == param_shape:
    return param_spec
  if field in _FACTORED_FIELDS and len(param_shape) >= 2:
    axis = _factored_dims(param_shape, 0)[_FACTORED_FIELDS[field]]
    if shape == param_shape[:axis] + param_shape[axis + 1:]:
      spec = tuple(param_spec) + (None,) * (len(param_shape) - len(param_spec))
      return PartitionSpec(*spec[:axis], *spec[axis + 1:])
  return None


def state_shardings(opt_state: Any, params: Any, param_shardings: Any,
                    mesh) -> Any:
  """Shardings of an optimizer state for parameters sharded as given.

  A statistic of a parameter (its state path ends with the parameter's
  path) is split as the parameter: one shaped like it (Adam's moments,
  Adafactor's unfactored second moments) takes its sharding; Adafactor's
  factored row and column statistics take it without the axis they average
  out, so they are split over 'data' and 'model' like their parameter, not
  replicated. The rest (counters, placeholders) is replicated.

  Args:
    opt_state: the state of `build_optimizer`'s transformation (arrays or
      shape structs).
    params: the parameters (arrays or shape structs).
    param_shardings: `NamedSharding`s of `params`.
    mesh: the device mesh.
  """
  by_path = {
      partitioning.key_names(path): (tuple(param.shape), sharding.spec)
      for (path, param), sharding in zip(
          jax.tree_util.tree_flatten_with_path(params)[0],
          jax.tree.leaves(param_shardings))}

  def leaf_sharding(path, leaf):
    names = partitioning.key_names(path)
    for start in range(len(names)):
      if names[start:] not in by_path:
        continue
      field = names[start - 1] if start else None
      spec = _statistic_spec(field, *by_path[names[start:]], tuple(leaf.shape))
      if spec is not None:
        return mesh_lib.divisible_sharding(leaf.shape, NamedSharding(mesh, spec))
    return mesh_lib.replicated(mesh)

  return jax.tree_util.tree_map_with_path(leaf_sharding, opt_state)
