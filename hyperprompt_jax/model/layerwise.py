"""Optimizer updates inside the backward pass of a scanned layer stack.

A scanned stack's gradient is as large as its parameters, a second copy
of them (at XXL on 8 v5e chips, more than fits beside them). While
`LayerUpdates` are active (`applying`), `network` runs each scanned stack
through `scan_with_updates`. Its forward pass keeps every layer's input (as
remat 'full'); its backward pass recomputes one layer at a time, takes that
layer's parameter gradient and applies the optimizer to the layer at once,
writing its new parameters and statistics over the old ones. So no gradient
larger than one layer's exists, and the stack's parameters and statistics
are updated in place.

This is the plain step's update whenever the optimizer treats each layer on
its own (Adafactor here: factored statistics, update clipping and parameter
scale per layer; not a global gradient-norm clip): every layer's gradient
is taken with the old parameters of all layers, as backpropagation takes
it, before any of them changes.

The custom VJP returns the new parameters and statistics where the
cotangents of the stack's parameters and optimizer state would be;
`trainer.Trainer` reads them as such.
"""

import contextlib
import dataclasses
import functools
from typing import Any, Callable, Iterator, Mapping, Optional

import jax
import jax.numpy as jnp

# The subtree of a stack's scanned layers, `params[stack]['layers']` (the
# name of `network`'s `nn.scan`), each leaf with a leading layers axis.
LAYERS = 'layers'

# (grads, params, state) of one layer -> (params, state); every tree holds
# the layer's slice of its stack's leaves with a leading axis of size 1.
UpdateFn = Callable[[Any, Any, Any], tuple[Any, Any]]


@dataclasses.dataclass(frozen=True)
class LayerUpdates:
  """How the stacks update their layers.

  Attributes:
    update: (stack name, grads, params, state) -> (params, state) of one
      layer, as `UpdateFn` (the stack's name first).
    states: stack name -> the optimizer state of its `layers` leaves: their
      statistics with the stack's leading layers axis, and scalars (step
      counts) that every layer's update reads.
  """
  update: Callable[..., tuple[Any, Any]]
  states: Mapping[str, Any]


_ACTIVE: list[LayerUpdates] = []


@contextlib.contextmanager
def applying(updates: LayerUpdates) -> Iterator[None]:
  """Makes the network update its scanned stacks in their backward passes
  while tracing inside this context."""
  _ACTIVE.append(updates)
  try:
    yield
  finally:
    _ACTIVE.pop()


def active() -> Optional[LayerUpdates]:
  """The innermost `applying` context's updates, or None."""
  return _ACTIVE[-1] if _ACTIVE else None


def split_params(params: Mapping[str, Any]) -> tuple[dict, dict]:
  """`params` without the stacks' `layers` subtrees, and those subtrees by
  stack name (stacks that are not scanned are left in place)."""
  rest, stacks = dict(params), {}
  for name, subtree in params.items():
    if isinstance(subtree, Mapping) and LAYERS in subtree:
      rest[name] = dict(subtree)
      stacks[name] = rest[name].pop(LAYERS)
  return rest, stacks


def join_params(rest: Mapping[str, Any], stacks: Mapping[str, Any]) -> dict:
  """The inverse of `split_params`."""
  params = dict(rest)
  for name, layers in stacks.items():
    params[name] = {**params.get(name, {}), LAYERS: layers}
  return params


def _is_int(x) -> bool:
  return not jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _zero_cotangent(x):
  """The cotangent of an input nothing changes: float0 for integers."""
  if _is_int(x):
    return jnp.zeros(jnp.shape(x), jax.dtypes.float0)
  return jnp.zeros_like(x)


def _add_cotangents(total, part):
  return jax.tree.map(lambda t, p: t if _is_int(t) else t + p, total, part)


def _layer(tree, index):
  """Layer `index` of every leaf (leading axis dropped); None stays None."""
  return jax.tree.map(lambda x: x[index], tree)


def _layer_slice(tree, index):
  """Layer `index` of every leaf that has a layers axis, kept with size 1;
  scalars (step counts) as they are."""
  return jax.tree.map(
      lambda x: x if x.ndim == 0 else jax.lax.dynamic_slice_in_dim(
          x, index, 1), tree)


def _set_layer(tree, part, index):
  """`tree` with layer `index` of its leaves set from `part` (leading axis
  of size 1); scalars are kept."""
  return jax.tree.map(
      lambda x, p: x if x.ndim == 0 else jax.lax.dynamic_update_slice_in_dim(
          x, p.astype(x.dtype), index, 0), tree, part)


def scan_with_updates(layer_fn: Callable[..., jax.Array], update: UpdateFn,
                      params: Any, state: Any, x: jax.Array, context: Any,
                      rngs: Optional[jax.Array]) -> jax.Array:
  """Applies a stack's layers to `x`, updating them in the backward pass.

  Args:
    layer_fn: (layer params, x, context, layer index, rng or None) -> the
      layer's output, shaped like `x`.
    update: the optimizer on one layer (see `UpdateFn`).
    params: the stack's parameters, each leaf `[layers, ...]`.
    state: the optimizer state of `params` (leaves `[layers, ...]`, and
      scalars).
    x: the first layer's input `[batch, len, embed]`.
    context: what every layer reads (masks, biases, the encodings, each
      layer's prompts); its cotangent is summed over the layers.
    rngs: `[layers, ...]` a dropout key per layer, or None.

  Returns:
    The last layer's output. Differentiated, the cotangents of `params` and
    `state` are their updated values.
  """
  return _scan(layer_fn, update, params, state, x, context, rngs)


def _forward(layer_fn, params, x, context, rngs):
  """The last layer's output, and every layer's input `[layers, ...x]`."""
  def body(y, index):
    # `+ index * 0` (exact for finite weights) makes each layer's slice
    # depend on the loop step, so XLA cannot hoist the layers' casts to the
    # compute dtype out of the loop, where they would hold a cast copy of
    # the whole stack. An optimization barrier does not stop it.
    layer_params = jax.tree.map(lambda x: x + index.astype(x.dtype) * 0,
                                _layer(params, index))
    return layer_fn(layer_params, y, context, index,
                    _layer(rngs, index)), y
  count = jax.tree.leaves(params)[0].shape[0]
  return jax.lax.scan(body, x, jnp.arange(count))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _scan(layer_fn, update, params, state, x, context, rngs):
  del update, state
  return _forward(layer_fn, params, x, context, rngs)[0]


def _scan_fwd(layer_fn, update, params, state, x, context, rngs):
  del update
  y, inputs = _forward(layer_fn, params, x, context, rngs)
  return y, (params, state, inputs, context, rngs)


def _scan_bwd(layer_fn, update, residuals, dy):
  params, state, inputs, context, rngs = residuals
  count = inputs.shape[0]

  def body(step, carry):
    params, state, dx, dcontext = carry
    index = count - 1 - step
    layer_params = _layer(params, index)
    rng = _layer(rngs, index)
    _, vjp = jax.vjp(lambda p, y, c: layer_fn(p, y, c, index, rng),
                     layer_params, inputs[index], context)
    grads, dx, dlayer_context = vjp(dx)
    expand = lambda tree: jax.tree.map(lambda a: a[None], tree)
    new_params, new_state = update(expand(grads), expand(layer_params),
                                   _layer_slice(state, index))
    return (_set_layer(params, new_params, index),
            _set_layer(state, new_state, index), dx,
            _add_cotangents(dcontext, dlayer_context))

  zeros = jax.tree.map(_zero_cotangent, context)
  params, state, dx, dcontext = jax.lax.fori_loop(
      0, count, body, (params, state, dy, zeros))
  state = jax.tree.map(lambda s: _zero_cotangent(s) if _is_int(s) else s,
                       state)
  return (params, state, dx, dcontext,
          jax.tree.map(_zero_cotangent, rngs))


_scan.defvjp(_scan_fwd, _scan_bwd)
