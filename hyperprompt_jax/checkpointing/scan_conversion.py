"""Parameter trees of unscanned and scanned layer stacks, converted exactly.

An unscanned stack holds one subtree per layer, `encoder/layers_0`, ...,
`encoder/layers_{n-1}` (t5x's and Hugging Face's T5.1.1 layout); a scanned
one (`T5Config.scan_layers=True`) holds one subtree `encoder/layers` whose
leaves stack the layers' along a leading axis, as flaxformer's scanned T5.
Everything outside the layers (embeddings, norms, relative position biases,
task conditioning) is the same in both.

The leaves are only stacked or sliced, so converting and converting back
returns the same arrays bit for bit. `stack` and `unstack` let callers keep
leaves lazy (`checkpoint_import.LazyArray`) or on device; params axes
(`params_axes`, leaves `AxisMetadata`) convert too, gaining or losing the
leading `layers` axis name.
"""

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp
import numpy as np

SCANNED = 'layers'  # The scanned stack's subtree, and its axis name.
_LAYER = re.compile(r'layers_(\d+)')

Tree = Mapping[str, Any]
Stack = Callable[[Sequence[Any]], Any]
Unstack = Callable[[Any, int], Any]


def _is_axes(x) -> bool:
  return isinstance(x, nn_partitioning.AxisMetadata)


def stack_arrays(leaves: Sequence[Any]) -> Any:
  """Stacks layer leaves: numpy stays numpy, anything else becomes jax."""
  if _is_axes(leaves[0]):
    return nn_partitioning.AxisMetadata(names=(SCANNED, *leaves[0].names))
  if all(isinstance(x, np.ndarray) for x in leaves):
    return np.stack(leaves)
  return jnp.stack(leaves)


def unstack_array(leaf: Any, index: int) -> Any:
  """Layer `index` of a stacked leaf."""
  if _is_axes(leaf):
    if leaf.names[0] != SCANNED:
      raise ValueError(f'Scanned params axes lead with {SCANNED!r}, got '
                       f'{leaf.names}.')
    return nn_partitioning.AxisMetadata(names=tuple(leaf.names[1:]))
  return leaf[index]


def layer_count(stack: Tree) -> int:
  """Number of unscanned layers `layers_i` in a stack's subtree."""
  indices = sorted(int(m[1]) for k in stack if (m := _LAYER.fullmatch(k)))
  if indices != list(range(len(indices))):
    raise ValueError(f'Layers of a stack must be layers_0..layers_(n-1), got '
                     f'{["layers_%d" % i for i in indices]}.')
  return len(indices)


def is_scanned(stack: Tree) -> bool:
  """Whether a stack's subtree (e.g. `params['encoder']`) is scanned."""
  return SCANNED in stack


def _map(fn, tree: Tree) -> Tree:
  """`fn` on each leaf (arrays, `AxisMetadata` or other non-dict values)."""
  if isinstance(tree, Mapping):
    return {k: _map(fn, v) for k, v in tree.items()}
  return fn(tree)


def _zip_map(fn, trees: Sequence[Tree]) -> Tree:
  first = trees[0]
  if isinstance(first, Mapping):
    for t in trees[1:]:
      if not isinstance(t, Mapping) or t.keys() != first.keys():
        raise ValueError('The layers of a stack have different parameters.')
    return {k: _zip_map(fn, [t[k] for t in trees]) for k in first}
  return fn(trees)


def scan_stack(stack: Tree, stack_fn: Stack = stack_arrays) -> Tree:
  """One stack's `layers_0..layers_{n-1}` subtrees as one `layers` subtree."""
  n = layer_count(stack)
  if n == 0:
    return dict(stack)
  rest = {k: v for k, v in stack.items() if not _LAYER.fullmatch(k)}
  if SCANNED in rest:
    raise ValueError(f'A stack holds both `{SCANNED}` and `layers_i`.')
  return {**rest, SCANNED: _zip_map(
      stack_fn, [stack[f'layers_{i}'] for i in range(n)])}


def unscan_stack(stack: Tree, unstack_fn: Unstack = unstack_array,
                 num_layers: int | None = None) -> Tree:
  """One stack's `layers` subtree as `layers_0..layers_{n-1}` subtrees.

  `num_layers` is needed only when the subtree has no arrays to read it from
  (params axes).
  """
  if not is_scanned(stack):
    return dict(stack)
  rest = {k: v for k, v in stack.items() if k != SCANNED}
  if num_layers is None:
    leaves = jax.tree.leaves(stack[SCANNED], is_leaf=_is_axes)
    sizes = {x.shape[0] for x in leaves if hasattr(x, 'shape')}
    if len(sizes) != 1:
      raise ValueError('Cannot tell the number of scanned layers; pass '
                       'num_layers.')
    num_layers = sizes.pop()
  layers = stack[SCANNED]
  return {**rest, **{f'layers_{i}': _map(lambda x, i=i: unstack_fn(x, i),
                                         layers)
                     for i in range(num_layers)}}


def _stacks(tree: Tree):
  """Names of the subtrees holding layers (the encoder and the decoder)."""
  return [name for name, sub in tree.items() if isinstance(sub, Mapping) and (
      is_scanned(sub) or layer_count(sub))]


def scan_params(tree: Tree, stack_fn: Stack = stack_arrays) -> Tree:
  """A params (or params axes) tree with every stack's layers scanned."""
  stacks = _stacks(tree)
  return {k: scan_stack(v, stack_fn) if k in stacks else v
          for k, v in tree.items()}


def unscan_params(tree: Tree, unstack_fn: Unstack = unstack_array,
                  num_layers: Mapping[str, int] | None = None) -> Tree:
  """A params (or params axes) tree with every stack's layers unscanned.

  Args:
    tree: params, or params axes with `num_layers` given.
    unstack_fn: `(leaf, i) -> layer i's leaf`.
    num_layers: stack name (e.g. 'encoder') -> its layers; read from the
      arrays when not given.
  """
  stacks = _stacks(tree)
  return {k: unscan_stack(v, unstack_fn, (num_layers or {}).get(k))
          if k in stacks else v for k, v in tree.items()}


def convert_like(tree: Tree, reference: Tree, stack_fn: Stack = stack_arrays,
                 unstack_fn: Unstack = unstack_array) -> Tree:
  """`tree` with each stack scanned or unscanned as `reference`'s.

  Stacks already laid out like `reference`'s, and subtrees `reference` lacks,
  are returned as they are.
  """
  converted = dict(tree)
  for name in _stacks(tree):
    ref = reference.get(name)
    if not isinstance(ref, Mapping):
      continue
    if is_scanned(ref) and not is_scanned(tree[name]):
      converted[name] = scan_stack(tree[name], stack_fn)
    elif layer_count(ref) and is_scanned(tree[name]):
      converted[name] = unscan_stack(tree[name], unstack_fn, layer_count(ref))
  return converted
