"""Interconnect and memory traffic read from compiled HLO (`hlo_traffic`)."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

from hyperprompt_jax.tools import hlo_traffic

# On 4 host devices as a 2 x 2 mesh ('a', 'b'), one program per collective
# kind, each on a known f32 operand of 16 x 32 per device (2048 bytes); the
# all-reduce inside a scan of 5. Prints the compiled HLO text.
_COLLECTIVES_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    assert jax.device_count() == 4
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ('a', 'b'))
    def step(x):  # x: [16, 32] per device
      def body(c, _):
        summed = jax.lax.psum(c, 'a')
        return jax.lax.pcast(summed, 'a', to='varying') * 0.5, None
      gathered = jax.lax.all_gather(x, 'b', tiled=True)  # [32, 32]
      scattered = jax.lax.psum_scatter(gathered, 'b', scatter_dimension=0,
                                       tiled=True)  # [16, 32]
      looped, _ = jax.lax.scan(body, scattered, None, length=5)
      swapped = jax.lax.all_to_all(looped, 'b', 0, 0, tiled=True)
      return jax.lax.ppermute(swapped, 'a', [(0, 1), (1, 0)])
    spec = P(('a', 'b'))
    x = jax.ShapeDtypeStruct((64, 32), jnp.float32,
                             sharding=NamedSharding(mesh, spec))
    program = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=spec,
                                    out_specs=spec))
    print(program.lower(x).compile().as_text())
""")


@pytest.fixture(scope='module')
def four_device_hlo():
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=os.environ.get(
      'XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4')
  return subprocess.run([sys.executable, '-c', _COLLECTIVES_SCRIPT], env=env,
                        check=True, capture_output=True, text=True).stdout


def test_collective_bytes_follow_the_ring_formulas(four_device_hlo):
  """Each kind's bytes sent per device, by hand from the operand (2048 bytes)
  and group size (2). Catches a wrong formula, an operand or result mixed up
  (all-gather's result is 4096 bytes), a group size read wrong, or a loop's
  collective counted once instead of per iteration."""
  operand, n = 16 * 32 * 4, 2
  traffic = hlo_traffic.analyse(four_device_hlo)
  assert traffic.ici_bytes == {
      'all-gather': (n - 1) * operand,
      'reduce-scatter': (n - 1) / n * 2 * operand,  # of the gathered [32, 32]
      'all-reduce': 5 * 2 * (n - 1) / n * operand,  # in a scan of 5
      'all-to-all': (n - 1) / n * operand,
      'collective-permute': operand,
  }
  assert traffic.loops_without_trip_count == 0


def test_bytes_accessed_of_a_scan_match_the_unrolled_program():
  """XLA counts a loop body once; scaled by the loop multipliers, a scan of 6
  matmul layers accesses what the same 6 layers unrolled do by XLA's own
  count (within 15%: the scan carries its state through copies that the
  unrolled program fuses away). Catches a scale of 1 (6x too few bytes) or
  a body counted once too often."""
  w = jax.ShapeDtypeStruct((6, 128, 128), jnp.float32)
  x = jax.ShapeDtypeStruct((64, 128), jnp.float32)

  def scanned(w, x):
    return jax.lax.scan(lambda x, wi: (jnp.tanh(x @ wi), None), x, w)[0]

  def unrolled(w, x):
    for i in range(6):
      x = jnp.tanh(x @ w[i])
    return x

  loop = jax.jit(scanned).lower(w, x).compile()
  scale = hlo_traffic.analyse(loop.as_text()).bytes_accessed_scale
  reference = jax.jit(unrolled).lower(w, x).compile().cost_analysis()
  assert loop.cost_analysis()['bytes accessed'] * scale == pytest.approx(
      reference['bytes accessed'], rel=0.15)
  assert scale > 3


def test_group_sizes_in_each_spelling():
  """Replica groups as CPU, the iota form and TPU's mesh form write them.
  Catches the number of groups taken for their size."""
  def size(groups):
    instruction = hlo_traffic.Instruction(
        'x', 'f32[8]', 'all-reduce', ('y',), '%y', f', replica_groups={groups}')
    return hlo_traffic.group_size(instruction, num_devices=16)
  assert size('{{0,2,4},{1,3,5}}') == 3
  assert size('[4,2]<=[8]') == 2
  assert size('[2,4]<=[4,2]T(1,0)') == 4
  assert size("mesh['axis_0'=2,'axis_1'=4,'axis_2'=2] {'axis_0','axis_2'}") == 4
  assert size('{}') == 16


# A TPU-style program: a loop of 8 whose condition compares the induction
# variable with a constant (no known_trip_count), and one all-gather that TPU
# split into start, continuation and done fusions sharing channel_id=3.
_TPU_STYLE_HLO = textwrap.dedent("""
    HloModule m, num_partitions=4

    %start (p0: bf16[1,256]) -> bf16[4,256] {
      %p0 = bf16[1,256]{1,0} parameter(0)
      ROOT %all-gather.1 = bf16[4,256]{1,0} all-gather(%p0), channel_id=3, replica_groups=[1,4]<=[4], dimensions={0}
    }

    %continuation (p1: bf16[1,256]) -> bf16[4,256] {
      %p1 = bf16[1,256]{1,0} parameter(0)
      ROOT %all-gather.2 = bf16[4,256]{1,0:S(1)} all-gather(%p1), channel_id=3, replica_groups=[1,4]<=[4], dimensions={0}
    }

    %done (p2: bf16[1,256]) -> bf16[4,256] {
      %p2 = bf16[1,256]{1,0} parameter(0)
      ROOT %all-gather.3 = bf16[4,256]{1,0} all-gather(%p2), channel_id=3, replica_groups=[1,4]<=[4], dimensions={0}
    }

    %body (b: (s32[], bf16[1,256])) -> (s32[], bf16[1,256]) {
      %b = (s32[], bf16[1,256]{1,0}) parameter(0)
      %i = s32[] get-tuple-element(%b), index=0
      %x = bf16[1,256]{1,0} get-tuple-element(%b), index=1
      %f1 = bf16[4,256]{1,0} fusion(%x), kind=kCustom, calls=%start
      %f2 = bf16[4,256]{1,0} fusion(%x), kind=kCustom, calls=%continuation
      %f3 = bf16[4,256]{1,0} fusion(%x), kind=kCustom, calls=%done
      %one = s32[] constant(1)
      %next = s32[] add(%i, %one)
      ROOT %t = (s32[], bf16[1,256]{1,0}) tuple(%next, %x)
    }

    %cond (c: (s32[], bf16[1,256])) -> pred[] {
      %c = (s32[], bf16[1,256]{1,0}) parameter(0)
      %limit = s32[]{:T(128)} constant(8)
      %j = s32[] get-tuple-element(%c), index=0
      ROOT %lt = pred[] compare(%j, %limit), direction=LT
    }

    ENTRY %main (a: bf16[1,256]) -> (s32[], bf16[1,256]) {
      %a = bf16[1,256]{1,0} parameter(0)
      %zero = s32[] constant(0)
      %init = (s32[], bf16[1,256]{1,0}) tuple(%zero, %a)
      ROOT %loop = (s32[], bf16[1,256]{1,0}) while(%init), condition=%cond, body=%body
    }
""")


def test_tpu_async_pieces_count_once_and_constant_conditions_give_trips():
  """8 iterations x (4 - 1) x 512 bytes. Catches the three fusions of one
  asynchronous all-gather counted three times, or a TPU loop (trip count
  only in its condition) counted once."""
  traffic = hlo_traffic.analyse(_TPU_STYLE_HLO)
  assert traffic.ici_bytes['all-gather'] == 8 * 3 * 256 * 2
  assert traffic.loops_without_trip_count == 0


def test_array_bytes_of_tuples_and_tiled_layouts():
  """Catches layout tiles (`T(8,128)`) or memory spaces read as dimensions."""
  assert hlo_traffic.array_bytes(
      '(bf16[2,3]{1,0:T(8,128)(2,1)S(1)}, s8[5], pred[], token[])') == 12 + 5 + 1


# On a v5e:2x2 topology (libtpu, no TPU): a scan of 8 layers whose [1024,
# 1024] bf16 weights are split over the 4 chips and gathered in each layer.
_TPU_SCAN_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.experimental import topologies
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    chips = topologies.get_topology_desc(topology_name='v5e:2x2',
                                         platform='tpu').devices
    mesh = Mesh(np.array(chips), ('x',))
    w = jax.ShapeDtypeStruct((8, 1024, 1024), jnp.bfloat16,
                             sharding=NamedSharding(mesh, P(None, 'x')))
    x = jax.ShapeDtypeStruct((512, 1024), jnp.bfloat16,
                             sharding=NamedSharding(mesh, P()))
    def layers(w, x):
      def layer(x, wi):
        wi = jax.lax.with_sharding_constraint(wi, NamedSharding(mesh, P()))
        return jnp.tanh(x @ wi), None
      return jax.lax.scan(layer, x, w)[0]
    print(jax.jit(layers).lower(w, x).compile().as_text())
""")


@pytest.mark.tpu_aot
def test_tpu_scan_gathers_once_per_layer():
  """8 layers x (4 - 1) x the 256 x 1024 bf16 shard each chip holds. Catches
  TPU's loop (trip count only in its condition) counted once, or its
  asynchronous all-gather counted per piece."""
  pytest.importorskip('libtpu', reason='libtpu (pip install -e .[tpu]) absent')
  from hyperprompt_jax.tools import plan  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, JAX_PLATFORMS='cpu', **plan._LIBTPU_HOST_ENV)  # pylint: disable=protected-access
  hlo = subprocess.run([sys.executable, '-c', _TPU_SCAN_SCRIPT], env=env,
                       check=True, capture_output=True, text=True).stdout
  traffic = hlo_traffic.analyse(hlo)
  assert traffic.ici_bytes['all-gather'] == 8 * 3 * 256 * 1024 * 2
  assert traffic.loops_without_trip_count == 0
