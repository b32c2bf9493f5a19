"""Sharded train steps: init, gradient accumulation, frozen backbone.

`Trainer` owns the jitted functions for one model, optimizer and mesh. Every
array is a global `jax.Array`: params and optimizer state are sharded by the
logical axis rules, batches along 'data'; `jax.jit` with in/out shardings
lets XLA's SPMD partitioner insert the collectives, so the same code runs on
one CPU, N host devices, a GPU or many processes.
"""

import dataclasses
import functools
from typing import Any, Mapping, Optional, Sequence

from clu import metrics as clu_metrics
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import optax

from hyperprompt_jax.model import layerwise
from hyperprompt_jax.sharding import mesh as mesh_lib
from hyperprompt_jax.sharding import partitioning
from hyperprompt_jax.training import optimizers
from hyperprompt_jax.training import train_state as train_state_lib

TrainState = train_state_lib.TrainState
Batch = Mapping[str, jax.Array]
# Metric name -> its sums (e.g. a token-weighted mean's total and count).
Metrics = dict[str, clu_metrics.Metric]
TUNE_MODES = ('all', 'conditioning')


def merge_metrics(first: Metrics, second: Metrics) -> Metrics:
  """The metrics of two batches or steps as one (sums and counts added)."""
  return {name: metric.merge(second[name]) for name, metric in first.items()}


def trainable_mask(params: Any, tune: str) -> Any:
  """Bools shaped like `params`: what the optimizer updates.

  Args:
    params: the params pytree (arrays or shape structs).
    tune: 'all' (the paper's main setting) or 'conditioning' (only the
      task-conditioning parameters; the backbone stays frozen).
  """
  if tune not in TUNE_MODES:
    raise ValueError(f'unknown tune mode {tune!r}: use "all" or "conditioning"')

  def is_trainable(path, _):
    return tune == 'all' or partitioning.is_conditioning_param(
        partitioning.key_names(path))

  mask = jax.tree_util.tree_map_with_path(is_trainable, params)
  if not any(jax.tree.leaves(mask)):
    raise ValueError('tune="conditioning" but the model has no task-conditioning '
                     'parameters (variant "none"): use tune="all"')
  return mask


def abstract_params(model, mesh: Mesh, rules: Sequence[tuple[str, Any]],
                    input_shapes: Mapping[str, Sequence[int]], rng: jax.Array
                    ) -> tuple[Any, Any, Any]:
  """The model's params as sharded shape structs, their shardings, and their
  logical axis names (a tree of `PartitionSpec`s).

  Init is only traced, nothing is allocated: the result is a restore target
  or the template of a fresh state.

  Args:
    model: an `EncoderDecoderModel`.
    mesh: the ('data', 'model') device mesh.
    rules: logical axis rules.
    input_shapes: model feature name -> global batch shape `[batch, length]`.
    rng: the init PRNG key.
  """
  init = functools.partial(model.get_initial_variables,
                           input_shapes=input_shapes,
                           input_types={k: jnp.int32 for k in input_shapes})
  with mesh_lib.activate(mesh, rules):
    variables = jax.eval_shape(init, rng)
  shardings = mesh_lib.param_shardings(variables['params'],
                                       variables['params_axes'], mesh, rules)
  params = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      variables['params'], shardings)
  return params, shardings, mesh_lib.logical_axes(variables['params_axes'])


def _state_donation(mesh: Mesh) -> tuple[int, ...]:
  """The train step's donated arguments: the state, except on CPU devices.

  Donation lets accelerators update the state in place (half the state's
  memory). On CPU, where host memory is rarely the limit, the aliasing
  constrains XLA's schedule: the tiny `none` step ran 1.4x slower with it
  (`python -m hyperprompt_jax.bench --variants=none`).
  """
  return () if mesh.devices.flat[0].platform == 'cpu' else (0,)


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
  """How each step trains.

  Attributes:
    tune: 'all' or 'conditioning' (frozen backbone).
    num_microbatches: split each batch into this many microbatches and sum
      their gradients (same update, less activation memory).
    compute_dtype_gradients: differentiate with respect to the parameters
      the network uses only in its compute dtype, cast to it
      (`EncoderDecoderModel.compute_dtype_params`): the same gradient values
      in half the memory for bfloat16; the optimizer still gets float32.
    layerwise_updates: apply the optimizer to each layer of a scanned stack
      inside the backward pass (`layerwise`): the same update without a
      gradient of the stacks, whose layers are recomputed as with remat
      'full'. Needs `scan_layers`, one microbatch, tune 'all' and an
      optimizer that treats layers on their own (no global-norm clip).
    seed: seeds parameter init and the per-step dropout RNG.
  """
  tune: str = 'all'
  num_microbatches: int = 1
  compute_dtype_gradients: bool = False
  layerwise_updates: bool = False
  seed: int = 0

  def check_layerwise(self, model, optimizer) -> None:
    """Raises ValueError where `layerwise_updates` cannot apply."""
    if not self.layerwise_updates:
      return
    problems = (
        (not model.module.config.scan_layers,
         'the layers are not scanned: set T5Config.scan_layers = True'),
        (self.num_microbatches != 1,
         f'num_microbatches={self.num_microbatches}: set it to 1'),
        (self.tune != 'all', f'tune={self.tune!r}: use "all"'),
        (self.compute_dtype_gradients,
         'compute_dtype_gradients is set too: unset it'),
        (not optimizers.decomposes_by_layer(optimizer),
         f'{type(optimizer).__name__} with a global gradient-norm clip '
         'needs every gradient first: unset the clip'))
    for found, problem in problems:
      if found:
        raise ValueError(f'TrainerConfig.layerwise_updates: {problem}')


class Trainer:
  """Jitted, sharded init / train / eval steps for one model on one mesh."""

  def __init__(self, model, optimizer, schedule: optimizers.Schedule,
               mesh: Mesh, input_shapes: Mapping[str, Sequence[int]],
               config: TrainerConfig = TrainerConfig(),
               axis_rules: Optional[Sequence[tuple[str, Any]]] = None):
    """Builds the abstract state and its shardings (nothing is allocated).

    Args:
      model: an `EncoderDecoderModel`.
      optimizer: an `optimizers.Adafactor` or `optimizers.AdamW`.
      schedule: the learning-rate schedule.
      mesh: the ('data', 'model') device mesh.
      input_shapes: model feature name -> global batch shape, for init.
      config: tuning mode, microbatches, seed.
      axis_rules: logical axis rules; default `partitioning.logical_axis_rules()`.
    """
    self.model = model
    self.mesh = mesh
    self.config = config
    self.rules = tuple(axis_rules or partitioning.logical_axis_rules())
    self.schedule = schedule()
    self.batch_sharding = mesh_lib.batch_sharding(mesh)
    self._input_shapes = {k: tuple(v) for k, v in input_shapes.items()}
    self._rng = jax.random.PRNGKey(config.seed)

    params, self.param_shardings, param_axes = abstract_params(
        model, mesh, self.rules, self._input_shapes, self._rng)
    self.trainable = trainable_mask(params, config.tune)
    self.tx = optimizers.build_optimizer(optimizer, schedule, self.trainable,
                                         param_axes)
    config.check_layerwise(model, optimizer)
    if config.layerwise_updates:
      self._build_layerwise(optimizer, schedule, params, param_axes)
    with self.activate():
      abstract_state = jax.eval_shape(self._create_state, self._rng)
    self.state_shardings = TrainState(
        step=mesh_lib.replicated(mesh), params=self.param_shardings,
        opt_state=optimizers.state_shardings(
            abstract_state.opt_state, abstract_state.params,
            self.param_shardings, mesh))
    self.abstract_state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        abstract_state, self.state_shardings)

    replicated = mesh_lib.replicated(mesh)
    self._jit_init = jax.jit(self._create_state,
                             out_shardings=self.state_shardings)
    self._jit_train = jax.jit(
        self._train_step,
        in_shardings=(self.state_shardings, self.batch_sharding),
        out_shardings=(self.state_shardings, replicated),
        donate_argnums=_state_donation(mesh))
    self._jit_eval = jax.jit(
        self._eval_step,
        in_shardings=(self.param_shardings, self.batch_sharding),
        out_shardings=replicated)

  def _build_layerwise(self, optimizer, schedule, params, param_axes):
    """The optimizers of `layerwise_updates`: one per scanned stack, applied
    to one layer at a time, and one for the other parameters. Each is
    `build_optimizer` on its subtree, so its state is a part of the whole
    optimizer's (`optimizers.state_part`) and checkpoints stay the same."""
    def part_tx(keep):
      part = lambda tree: keep(layerwise.split_params(tree))
      tx = optimizers.build_optimizer(optimizer, schedule,
                                      part(self.trainable), part(param_axes))
      return tx, jax.eval_shape(tx.init, part(params))

    self._rest_tx, self._rest_template = part_tx(lambda split: split[0])
    self._stack_txs, self._stack_templates = {}, {}
    for name in layerwise.split_params(params)[1]:
      self._stack_txs[name], self._stack_templates[name] = part_tx(
          lambda split, name=name: layerwise.join_params({}, {
              name: split[1][name]}))

  def _update_layer(self, stack: str, grads, params, state):
    """One layer's optimizer update (`layerwise.UpdateFn`)."""
    nest = lambda tree: layerwise.join_params({}, {stack: tree})
    updates, state = self._stack_txs[stack].update(nest(grads), state,
                                                   nest(params))
    updates = layerwise.split_params(updates)[1][stack]
    return optax.apply_updates(params, updates), state

  def activate(self):
    """Mesh and logical rules for tracing (activation sharding constraints)."""
    return mesh_lib.activate(self.mesh, self.rules)

  def _create_state(self, rng) -> TrainState:
    types = {k: jnp.int32 for k in self._input_shapes}
    params = self.model.get_initial_variables(rng, self._input_shapes,
                                              types)['params']
    return TrainState.create(params, self.tx)

  def init_state(self) -> TrainState:
    """Fresh parameters and optimizer state, created already sharded."""
    with self.activate():
      return self._jit_init(self._rng)

  def _loss_and_grads(self, params, batch: Batch, rng):
    """Gradients of the batch's loss, and its metric sums.

    With `num_microbatches` > 1 the gradients of the slices are summed to the
    full batch's, and so are their metrics' sums and token counts.
    """
    # stop_gradient makes the frozen leaves' gradients symbolic zeros, so
    # XLA never computes their weight gradients.
    def loss_fn(p, b, r):
      p = jax.tree.map(lambda x, t: x if t else jax.lax.stop_gradient(x), p,
                       self.trainable)
      return self.model.loss_fn(p, b, r)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if self.config.compute_dtype_gradients:
      stored = params
      params = self.model.compute_dtype_params(params)
      # The optimizer gets the gradient in each parameter's stored dtype.
      as_params = lambda grads: jax.tree.map(lambda g, p: g.astype(p.dtype),
                                             grads, stored)
    else:
      as_params = lambda grads: grads
    n = self.config.num_microbatches
    if n == 1:
      (_, metrics), grads = grad_fn(params, batch, rng)
      return as_params(grads), metrics

    def split(x):
      # Rows i, i+n, i+2n... form microbatch i, so every microbatch stays
      # spread over all of 'data' (contiguous slices would sit on a few).
      if x.shape[0] % n:
        raise ValueError(f'batch size {x.shape[0]} is not divisible by '
                         f'num_microbatches={n}')
      x = x.reshape((x.shape[0] // n, n) + x.shape[1:]).swapaxes(0, 1)
      return jax.lax.with_sharding_constraint(
          x, NamedSharding(self.mesh, P(None, 'data')))

    micro = jax.tree.map(split, batch)
    # The model divides each microbatch's loss by its own token count (or by
    # a constant): weighting microbatch i's gradient by its tokens (or by 1),
    # and dividing the sum by the batch's, gives the full batch's gradient.
    token_mean = self.model.loss_normalizing_factor is None

    def body(carry, inputs):
      index, microbatch = inputs
      (_, metrics), grads = grad_fn(params, microbatch,
                                    jax.random.fold_in(rng, index))
      if token_mean:
        grads = jax.tree.map(lambda g: g * metrics['loss'].count, grads)
      grad_sum, merged = carry
      return (jax.tree.map(jnp.add, grad_sum, as_params(grads)),
              merge_metrics(merged, metrics)), None

    (_, metric_shapes), grad_shapes = jax.eval_shape(
        grad_fn, params, jax.tree.map(lambda x: x[0], micro), rng)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                         (jax.eval_shape(as_params, grad_shapes),
                          metric_shapes))
    (grads, metrics), _ = jax.lax.scan(body, zeros, (jnp.arange(n), micro))
    if token_mean:
      tokens = jnp.maximum(metrics['loss'].count, 1.0)
      grads = jax.tree.map(lambda g: g / tokens, grads)
    return grads, metrics

  def _train_step(self, state: TrainState, batch: Batch):
    rng = jax.random.fold_in(jax.random.fold_in(self._rng, 1), state.step)
    learning_rate = clu_metrics.LastValue(value=self.schedule(state.step))
    if self.config.layerwise_updates:
      state, metrics = self._layerwise_update(state, batch, rng)
    else:
      grads, metrics = self._loss_and_grads(state.params, batch, rng)
      state = state.apply_gradients(grads, self.tx, self.trainable)
    return state, dict(metrics, learning_rate=learning_rate)

  def _layerwise_update(self, state: TrainState, batch: Batch, rng
                        ) -> tuple[TrainState, Metrics]:
    """The step's update with `layerwise_updates`: the backward pass
    updates the stacks' layers (their gradient is never whole), the rest is
    updated after it. Returns the new state and the batch's metrics."""
    stack_states = {
        name: optimizers.state_part(state.opt_state, template)
        for name, template in self._stack_templates.items()}

    def loss_fn(params, stack_states, b, r):
      with layerwise.applying(layerwise.LayerUpdates(self._update_layer,
                                                     stack_states)):
        return self.model.loss_fn(params, b, r)

    # The cotangents of the stacks' params and states are their new values.
    (_, metrics), (grads, stack_states) = jax.value_and_grad(
        loss_fn, (0, 1), has_aux=True, allow_int=True)(
            state.params, stack_states, batch, rng)
    rest_grads, stacks = layerwise.split_params(grads)
    rest = layerwise.split_params(state.params)[0]
    updates, rest_state = self._rest_tx.update(
        rest_grads, optimizers.state_part(state.opt_state,
                                          self._rest_template), rest)
    return state.replace(
        step=state.step + 1,
        params=layerwise.join_params(optax.apply_updates(rest, updates),
                                     stacks),
        opt_state=optimizers.state_with(
            state.opt_state, *stack_states.values(), rest_state)), metrics

  def compile_train_step(self, state: TrainState, batch: Batch):
    """The train step compiled ahead of time for these shapes.

    Call the result like `train_step` (under `activate()`); it is how
    benchmarks time compilation apart from running.
    """
    with self.activate():
      return self._jit_train.lower(state, batch).compile()

  def train_step(self, state: TrainState, batch: Batch
                 ) -> tuple[TrainState, Metrics]:
    """One update on a global batch: the new state and the batch's metrics.

    The metrics are the model's (`clu.metrics.Average`s of sums and token
    counts, see `EncoderDecoderModel.loss_fn`) and the step's
    `learning_rate` (a `clu.metrics.LastValue`); steps merge with
    `merge_metrics`. The input state is donated on accelerators: do not use
    it afterwards.
    """
    with self.activate():
      return self._jit_train(state, batch)

  def _eval_step(self, params, batch: Batch):
    _, metrics = self.model.loss_fn(params, batch, None)
    return metrics

  def eval_step(self, params, batch: Batch) -> Metrics:
    """Teacher-forced metrics of a global batch, without dropout (the
    model's `clu.metrics.Average`s; batches merge with `merge_metrics`)."""
    with self.activate():
      return self._jit_eval(params, batch)
