"""The device mesh (data x model) and shardings from logical axis names.

Parameters carry logical axis names in the `params_axes` collection
(`flax.linen.partitioning`); `logical_axis_rules` map them to the mesh axes
'data' and 'model'. Batches are split along 'data' on their leading axis.
"""

import contextlib
import dataclasses
import math
from typing import Any, Optional, Sequence

import flax
import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'model')


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Mesh shape; -1 on one axis takes the devices the other leaves.

  The default puts every device on 'data' (pure data parallelism); raise
  `model` to split weights along heads / MLP / vocab (model parallelism).
  """
  data: int = -1
  model: int = 1

  def shape(self, num_devices: int) -> tuple[int, int]:
    data, model = self.data, self.model
    if data == -1 and model == -1:
      raise ValueError('MeshConfig: at most one of data, model may be -1')
    if data == -1:
      data = num_devices // model if model and num_devices % model == 0 else 0
    if model == -1:
      model = num_devices // data if data and num_devices % data == 0 else 0
    if data * model != num_devices or data <= 0:
      raise ValueError(
          f'MeshConfig(data={self.data}, model={self.model}) does not fit '
          f'{num_devices} devices: set MeshConfig.data x MeshConfig.model = '
          f'{num_devices}')
    return data, model

  def make_mesh(self, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A ('data', 'model') mesh over `devices` (all devices by default).

    On TPU the axes follow the chips' physical torus (neighbours along
    'model' are neighbours on the interconnect), splitting physical axes
    where the mesh needs it (e.g. 8 x 8 over a 4x4x4 v4 slice); other
    devices, and TPU subsets without a torus layout, keep their order.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = self.shape(len(devices))
    try:
      grid = mesh_utils.create_device_mesh(shape, devices,
                                           allow_split_physical_axes=True)
    except (NotImplementedError, ValueError, AssertionError):
      grid = np.asarray(devices).reshape(shape)
    # Auto axes: shardings are hints that XLA's SPMD partitioner propagates
    # (t5x's model); explicit axes would make every constraint an assert.
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_axes(params_axes: Any) -> Any:
  """The params' logical axis names, a tree of `PartitionSpec`s, from their
  `params_axes` collection."""
  return flax.core.unfreeze(nn.partitioning.get_axis_names(params_axes))


def param_shardings(params: Any, params_axes: Any, mesh: Mesh,
                    rules: Sequence[tuple[str, Any]]) -> Any:
  """NamedShardings for `params` (arrays or shape structs) from their
  `params_axes` collection.

  A dimension that its mesh axes do not divide stays whole (rules name axes,
  not sizes: e.g. a 16-slot prompt on a 32-way 'data' axis).
  """
  shardings = nn.logical_to_mesh_sharding(logical_axes(params_axes), mesh,
                                          list(rules))
  return jax.tree.map(lambda p, s: divisible_sharding(p.shape, s), params,
                      shardings)


def divisible_sharding(shape: Sequence[int],
                       sharding: NamedSharding) -> NamedSharding:
  """`sharding` without the mesh axes that do not divide their dimension."""
  spec = []
  for size, axes in zip(shape, tuple(sharding.spec) + (None,) * len(shape)):
    names = axes if isinstance(axes, tuple) else (axes,)
    ways = math.prod(sharding.mesh.shape[a] for a in names if a is not None)
    spec.append(axes if size % ways == 0 else None)
  return NamedSharding(sharding.mesh, P(*spec))


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Sequence[tuple[str, Any]]):
  """Mesh and logical axis rules for tracing (activation sharding constraints)."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(list(rules)):
    yield


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Examples split over 'data'; replicated over 'model'."""
  return NamedSharding(mesh, P('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
