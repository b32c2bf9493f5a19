r"""Pod plans: the real train step compiled ahead of time for TPU topologies.

  python -m hyperprompt_jax.plan --gin_file=tpu/base_global_v5e_8.gin \
    [--gin_file=... --gin.KEY=VALUE ...] --topology=v5e:2x4 \
    [--topology=v4:2x2x1 ...] [--hbm_gib=G] [--output=FILE] [--input_feed] \
    [--cache_dir=DIR] [--verbose]

For each `--topology` (`v4:AxBxC`, `v5e:AxB`, `v5p:AxBxC`, `v6e:AxB`, or
`cpu:N` for N host devices), the run's gin files give the model, variant,
mixture, lengths, batch, packing, mesh, parameter partitioning and network
knobs; the trainer's own train step (`trainer.Trainer`, Adafactor or AdamW as
configured, the state donated as on accelerators) is lowered on sharded
`ShapeDtypeStruct`s over one device per chip and compiled by XLA for that
chip (libtpu; no TPU needed). Reported per chip: the train state (parameters
and optimizer state), the rest of the arguments and outputs, XLA's
temporaries, their total against the chip's HBM; and the step time predicted
from the compiled program: its FLOPs at the chip's peak bf16 rate, its bytes
accessed at the HBM bandwidth, its collectives' bytes at the ICI bandwidth
(`hlo_traffic`), XLA's own estimate, the largest of these and the MFU it
implies. `--input_feed` measures the run's input pipeline on this host and
the host cores that keep up with that step (`input_feed`).

Compiled results are kept in `--cache_dir` by program (`plan_cache`): a
second plan of the same program skips the compile. TPU topologies need
libtpu (`pip install -e '.[tpu]'`; `make plan` installs it). Compiling takes
minutes for large models on a small host.
"""

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import pathlib
import re
import sys
from typing import Any, Optional, Sequence

from hyperprompt_jax import errors
from hyperprompt_jax import gin_utils
from hyperprompt_jax import tables
from hyperprompt_jax.tools import hlo_traffic
from hyperprompt_jax.tools import input_feed as input_feed_lib
from hyperprompt_jax.tools import plan_cache

GIB = 2**30
# TPU_ACCELERATOR_TYPE and TPU_WORKER_HOSTNAMES let libtpu start on a host
# that is not a TPU VM (otherwise it probes the VM's metadata server); the
# topology asked for is what the compiler targets. The planner only compiles,
# so it may load libtpu beside another process that holds it (a training job,
# another plan), which libtpu's lock file refuses by default.
_LIBTPU_HOST_ENV = {'TPU_ACCELERATOR_TYPE': 'v4-8',
                    'TPU_WORKER_HOSTNAMES': 'localhost',
                    'ALLOW_MULTIPLE_LIBTPU_LOAD': '1'}

_TPU_COMPILE_OPTIONS = {'xla_tpu_no_crash_on_oom': 'true'}


@dataclasses.dataclass(frozen=True)
class Chip:
  """An accelerator chip, as Google Cloud's TPU pages give it (docs/scaling.md
  names each page).

  hbm_gib: HBM per chip, GiB.
  peak_tflops: dense bf16 peak, 1e12 FLOP/s.
  hbm_gbps: HBM bandwidth, 1e9 bytes/s.
  ici_gbps: bidirectional interconnect bandwidth per chip (all its links, in
    and out), 1e9 bytes/s.
  chips_per_host: chips of one TPU VM host; None for cpu:N (one host).
  """
  name: str
  hbm_gib: Optional[float]
  peak_tflops: Optional[float]
  hbm_gbps: Optional[float]
  ici_gbps: Optional[float]
  chips_per_host: Optional[int]
  topology_dims: int  # of the slice shape AxB...; 1 for cpu:N
  topology_form: str
  # libtpu's chip configuration: v4 chips run as one device of two cores
  # (megacore, 32 GiB) as JAX runs them; its default is a device per core.
  chip_config_name: Optional[str] = None


CHIPS = {
    # v4's page gives no ICI figure per chip: twice its all-reduce bandwidth
    # per pod (1.1 PB/s) over the pod's 4096 chips, the relation that the
    # v5e and v6e pages' own figures obey.
    'v4': Chip('TPU v4', 32, 275, 1200, 537, 4, 3,
               'v4:AxBxC, e.g. v4:2x2x1 (4 chips)', 'megacore'),
    'v5e': Chip('TPU v5e', 16, 197, 819, 400, 8, 2,
                'v5e:AxB, e.g. v5e:4x4 (16 chips)'),
    'v5p': Chip('TPU v5p', 95, 459, 2765, 1200, 4, 3,
                'v5p:AxBxC, e.g. v5p:2x2x1 (4 chips)'),
    'v6e': Chip('TPU v6e', 32, 918, 1640, 800, 8, 2,
                'v6e:AxB, e.g. v6e:2x4 (8 chips)'),
    # N host devices; their "HBM" is the host's memory shared by all N.
    'cpu': Chip('CPU (host devices)', None, None, None, None, None, 1,
                'cpu:N, e.g. cpu:8'),
}


@dataclasses.dataclass(frozen=True)
class Topology:
  """`kind:shape` as given on the command line."""
  kind: str
  shape: str

  @property
  def name(self) -> str:
    return f'{self.kind}:{self.shape}'

  @property
  def chip(self) -> Chip:
    return CHIPS[self.kind]

  @property
  def num_chips(self) -> int:
    """Chips of the slice (A x B x ...), or host devices of cpu:N."""
    return math.prod(int(n) for n in self.shape.split('x'))

  @property
  def num_hosts(self) -> int:
    """TPU VM hosts of the slice (slices smaller than a host have one)."""
    return -(-self.num_chips // (self.chip.chips_per_host or self.num_chips))


def parse_topology(text: str) -> Topology:
  """`v4:2x2x1` -> Topology; a one-line ValueError for anything else."""
  kind, _, shape = text.partition(':')
  forms = '; '.join(c.topology_form for c in CHIPS.values())
  if kind not in CHIPS:
    raise ValueError(f'unknown topology {text!r}: use {forms}')
  dims = CHIPS[kind].topology_dims
  if not re.fullmatch(r'[1-9][0-9]*' + r'(x[1-9][0-9]*)' * (dims - 1), shape):
    raise ValueError(f'bad topology {text!r}: write {CHIPS[kind].topology_form}')
  return Topology(kind, shape)


@dataclasses.dataclass(frozen=True)
class StepTime:
  """Lower bounds on a train step's time on one chip, in seconds, and the
  step time they predict: the largest of them.

  flops_seconds: the step's FLOPs at the chip's peak bf16 rate.
  hbm_seconds: the step's HBM traffic at the chip's HBM bandwidth.
  ici_seconds: the bytes each chip sends for the step's collectives at half
    the chip's bidirectional ICI bandwidth (its links' outgoing half, all
    links busy).
  xla_seconds: XLA's own TPU cost model (`optimal_seconds`), which counts a
    loop's body once; None where the compiler gives none (host CPUs) or a
    negative one (libtpu 0.0.42 on Small's step: -709 s).
  binds: the name of the largest bound.
  mfu: the FLOPs bound over the predicted time (the step's FLOPs as XLA
    counts them, remat recomputation included).
  """
  flops_seconds: float
  hbm_seconds: float
  ici_seconds: float
  xla_seconds: Optional[float]
  seconds: float
  binds: str
  mfu: float


def predict_step(chip: Chip, flops: float, bytes_accessed: float,
                 ici_bytes: float, xla_seconds: Optional[float]
                 ) -> Optional[StepTime]:
  """The step-time bounds of a step's per-chip costs; None for host CPUs."""
  if chip.peak_tflops is None:
    return None
  if xla_seconds is not None and xla_seconds <= 0:
    xla_seconds = None  # libtpu's estimate overflows on some programs
  bounds = {'FLOPs': flops / (chip.peak_tflops * 1e12),
            'HBM': bytes_accessed / (chip.hbm_gbps * 1e9),
            'ICI': ici_bytes / (chip.ici_gbps * 1e9 / 2)}
  if xla_seconds is not None:
    bounds['XLA'] = xla_seconds
  binds = max(bounds, key=bounds.get)
  return StepTime(flops_seconds=bounds['FLOPs'], hbm_seconds=bounds['HBM'],
                  ici_seconds=bounds['ICI'], xla_seconds=xla_seconds,
                  seconds=bounds[binds], binds=binds,
                  mfu=bounds['FLOPs'] / bounds[binds])


@dataclasses.dataclass(frozen=True)
class Plan:
  """The compiled train step of one run on one topology; bytes per chip.

  bytes_accessed and ici_bytes (per collective kind) count every iteration
  of the step's loops (see `hlo_traffic`); step is None for host CPUs.
  """
  run: str
  topology: str
  chip: str
  num_chips: int
  mesh: dict[str, int]
  parameter_partitioning_dims: int
  batch_size: int
  feature_lengths: dict[str, int]
  num_params: int
  state_bytes: int
  other_argument_output_bytes: int
  temp_bytes: int
  total_bytes: int
  hbm_bytes: Optional[int]
  fits: Optional[bool]
  flops: float
  flops_scaled_for_loops: bool
  bytes_accessed: float
  ici_bytes: dict[str, float]
  loops_without_trip_count: int
  step: Optional[StepTime]
  compile_seconds: float
  cached: bool  # read from the plan cache, compiled compile_seconds earlier
  num_hosts: int
  # With --input_feed: the input pipeline's cost for one host's rows, and the
  # host cores that make a batch per predicted step.
  input_feed: Optional[input_feed_lib.FeedCost] = None
  input_cores: Optional[float] = None


def _stderr_closed(quiet: bool):
  """libtpu and XLA write C++ logs to fd 2; drop them unless --verbose."""
  return errors.stderr_closed() if quiet else contextlib.nullcontext()


def prepare_environment(topologies: Sequence[Topology]) -> None:
  """Environment the topologies need, set before JAX starts its backends.

  The host backend is the CPU (compiling needs no accelerator); `cpu:N` asks
  for N host devices. TPU topologies need libtpu.
  """
  tpu = [t.name for t in topologies if t.kind != 'cpu']
  if tpu and importlib.util.find_spec('libtpu') is None:
    raise ValueError(
        f'libtpu is not installed, so {", ".join(tpu)} cannot be compiled: '
        "pip install -e '.[tpu]' (or run make plan), or plan for "
        '--topology=cpu:N')
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  # An installed libtpu starts with JAX even for cpu:N plans.
  if tpu or importlib.util.find_spec('libtpu') is not None:
    for key, value in _LIBTPU_HOST_ENV.items():
      os.environ.setdefault(key, value)
  cpus = [int(t.shape) for t in topologies if t.kind == 'cpu']
  flags = os.environ.get('XLA_FLAGS', '')
  if cpus and 'xla_force_host_platform_device_count' not in flags:
    os.environ['XLA_FLAGS'] = (
        f'{flags} --xla_force_host_platform_device_count={max(cpus)}'.strip())


def chip_devices(topology: Topology, quiet: bool = True) -> list[Any]:
  """One device per chip of `topology`."""
  import jax  # pylint: disable=g-import-not-at-top
  if topology.kind == 'cpu':
    devices = jax.devices('cpu')
    if len(devices) < int(topology.shape):
      raise ValueError(
          f'--topology={topology.name} needs {topology.shape} host devices but '
          f'JAX started with {len(devices)}: run the plan in a new process, or '
          'set XLA_FLAGS=--xla_force_host_platform_device_count='
          f'{topology.shape} before JAX starts')
    return devices[:int(topology.shape)]
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  options = {}
  if topology.chip.chip_config_name:
    options['chip_config_name'] = topology.chip.chip_config_name
  try:
    with _stderr_closed(quiet):
      devices = topologies.get_topology_desc(
          topology_name=topology.name, platform='tpu', **options).devices
  except Exception as e:  # pylint: disable=broad-except
    # libtpu's errors for shapes it does not know are plain runtime errors.
    raise ValueError(
        f'libtpu cannot make topology {topology.name} '
        f'({errors.first_line(e)}): write '
        f'{topology.chip.topology_form}, a slice shape that TPU offers') from None
  return [d for d in devices if getattr(d, 'core_on_chip', 0) == 0]


def _sharded_bytes(struct) -> int:
  """Bytes of one device's shard of a sharded ShapeDtypeStruct."""
  shape = struct.sharding.shard_shape(struct.shape)
  size = 1
  for n in shape:
    size *= n
  return size * struct.dtype.itemsize


def _run_settings() -> dict[str, Any]:
  """The train run's arguments, as the parsed gin files bind them."""
  import gin  # pylint: disable=g-import-not-at-top
  from hyperprompt_jax.training import train_loop  # pylint: disable=g-import-not-at-top
  settings = gin.get_bindings(train_loop.train)
  if 'model' not in settings or 'train_dataset_cfg' not in settings:
    raise ValueError(
        'the gin files configure no training run (train_loop.train has no '
        'model or train_dataset_cfg): pass a run file, e.g. '
        '--gin_file=tpu/base_global_v5e_8.gin, or one that includes '
        'runs/base.gin')
  return settings


def make_mesh(settings: dict[str, Any], topology: Topology,
              quiet: bool = True):
  """The run's ('data', 'model') mesh over the chips of `topology`.

  One-line ValueErrors for a mesh or batch that does not fit the chips.
  """
  from hyperprompt_jax.sharding import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  chips = chip_devices(topology, quiet)
  mesh_config = settings.get('mesh_config', mesh_lib.MeshConfig())
  try:
    mesh = mesh_config.make_mesh(chips)
  except ValueError:
    raise ValueError(
        f'mesh data={mesh_config.data} x model={mesh_config.model} does not '
        f'fit the {len(chips)} chips of {topology.name}: set '
        '--gin.DATA_MESH_SIZE and --gin.MODEL_MESH_SIZE so that data x model '
        f'= {len(chips)} (-1 takes the chips the other leaves)') from None
  batch_size = settings['train_dataset_cfg'].batch_size
  if batch_size % mesh.shape['data']:
    raise ValueError(
        f'BATCH_SIZE={batch_size} is not divisible by the data axis of mesh '
        f'{dict(mesh.shape)} on {topology.name}: use a multiple of '
        f"{mesh.shape['data']}, or set --gin.DATA_MESH_SIZE")
  return mesh


def _input_shapes(settings: dict[str, Any]) -> dict[str, tuple[int, ...]]:
  """Model feature -> global batch shape (`[batch]` for `task_ids`,
  `[batch, length]` for the others), as the run's data pipeline makes."""
  dataset, model = settings['train_dataset_cfg'], settings['model']
  return model.feature_converter_cls(pack=dataset.pack).batch_shapes(
      dataset.task_feature_lengths, dataset.batch_size)


def _lower_step(settings: dict[str, Any], topology: Topology, mesh,
                rules) -> tuple[Any, Any]:
  """The run's trainer over `mesh`, and its train step lowered (not compiled)."""
  import jax  # pylint: disable=g-import-not-at-top
  from hyperprompt_jax.sharding import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from hyperprompt_jax.training import optimizers  # pylint: disable=g-import-not-at-top
  from hyperprompt_jax.training import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

  input_shapes = _input_shapes(settings)
  trainer = trainer_lib.Trainer(
      settings['model'], settings.get('optimizer', optimizers.Adafactor()),
      settings.get('schedule', optimizers.Schedule()), mesh, input_shapes,
      settings.get('trainer_config', trainer_lib.TrainerConfig()), rules)
  batch = {k: jax.ShapeDtypeStruct(s, jax.numpy.int32,
                                   sharding=trainer.batch_sharding)
           for k, s in input_shapes.items()}
  # The trainer's step as it compiles on accelerators: the state donated
  # (updated in place). The trainer itself donates only off CPU, and this
  # host is a CPU; `cpu:N` plans compile the trainer's own jitted step.
  step = trainer._jit_train  # pylint: disable=protected-access
  if topology.kind != 'cpu':
    step = jax.jit(trainer._train_step,  # pylint: disable=protected-access
                   in_shardings=(trainer.state_shardings, trainer.batch_sharding),
                   out_shardings=(trainer.state_shardings,
                                  mesh_lib.replicated(mesh)),
                   donate_argnums=(0,))
  with trainer.activate():
    return trainer, step.lower(trainer.abstract_state, batch)


def _cost(stage) -> dict[str, float]:
  """XLA's cost analysis of a lowered (global) or compiled (per-chip)
  program: 'flops', 'bytes accessed', and on TPU 'optimal_seconds'."""
  cost = stage.cost_analysis()
  if cost is None:
    # JAX analyses lowered programs only for backends of its own (not TPU's
    # compile-only client); the unoptimised program's FLOPs are the same on
    # any backend, so the host's analyses it.
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top
    cost = _jax.hlo_module_cost_analysis(
        xla_bridge.get_backend('cpu'),
        stage.compiler_ir('hlo').as_hlo_module())
  if isinstance(cost, (list, tuple)):  # one entry per program on some versions
    cost = cost[0]
  return cost


def _flops(stage) -> float:
  return float(_cost(stage).get('flops', 0.0))


@dataclasses.dataclass(frozen=True)
class CompiledStep:
  """What the planner reads from a compiled train step; bytes per chip.

  flops, bytes_accessed and ici_bytes count the loops in full;
  optimal_seconds is libtpu's estimate (None on host CPUs).
  """
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  flops: float
  bytes_accessed: float
  ici_bytes: dict[str, float]
  loops_without_trip_count: int
  optimal_seconds: Optional[float]
  compile_seconds: float


def _compile_step(run: str, settings: dict[str, Any], topology: Topology,
                  mesh, rules, trainer, lowered, quiet: bool,
                  loop_free_settings: Optional[dict[str, Any]]
                  ) -> CompiledStep:
  """Compiles the lowered train step of `trainer` for the chips of `mesh`.

  XLA's cost analysis counts a loop's body once. A step with loops
  (microbatches; layers under scan) comes with `loop_free_settings`, the same
  run without them: its FLOPs are the compiled step's plus the loops' other
  iterations, the difference of the two programs' global FLOPs as lowered
  (not compiled) over the chips. Not their ratio: compilation removes FLOPs
  outside the loops (the one-hot embedding matmuls), not the layers'
  matmuls inside them, and a ratio scaled those removals too (XXL cut to
  2+2 layers, scanned: 13.42 TFLOPs per chip by ratio, 16.84 by difference,
  17.65 compiled unrolled). Bytes accessed and collectives are scaled by
  the loops' trip counts in the compiled HLO (`hlo_traffic`).
  """
  import time  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  # A step that needs more than the chip's HBM still compiles, so that the
  # plan says by how much (libtpu refuses it by default).
  options = None if topology.kind == 'cpu' else _TPU_COMPILE_OPTIONS
  start = time.perf_counter()
  try:
    with trainer.activate(), _stderr_closed(quiet):
      compiled = lowered.compile(compiler_options=options)
  except jax.errors.JaxRuntimeError as e:
    # libtpu refuses some very large unrolled programs outright (XXL with
    # 48 unrolled layers: 'Invalid TPU program').
    scanned = settings['model'].module.config.scan_layers
    hint = ('fewer examples per chip (BATCH_SIZE, or a larger slice); the '
            'layers are already scanned' if scanned else
            '--gin.network.T5Config.scan_layers=True')
    raise ValueError(
        f'the compiler refused the train step of {run} for {topology.name} '
        f'({errors.first_line(e)}): make the program smaller, e.g. '
        f'{hint}') from e
  compile_seconds = time.perf_counter() - start
  cost = _cost(compiled)
  flops = float(cost.get('flops', 0.0))
  if loop_free_settings is not None:
    _, loop_free = _lower_step(loop_free_settings, topology, mesh, rules)
    flops += (_flops(loop_free) - _flops(lowered)) / mesh.size
  memory = compiled.memory_analysis()
  traffic = hlo_traffic.analyse(compiled.as_text())
  return CompiledStep(
      argument_bytes=memory.argument_size_in_bytes,
      output_bytes=memory.output_size_in_bytes,
      alias_bytes=memory.alias_size_in_bytes,
      temp_bytes=memory.temp_size_in_bytes, flops=flops,
      bytes_accessed=float(cost.get('bytes accessed', 0.0)) * (
          traffic.bytes_accessed_scale),
      ici_bytes=traffic.ici_bytes,
      loops_without_trip_count=traffic.loops_without_trip_count,
      optimal_seconds=cost.get('optimal_seconds'),
      compile_seconds=compile_seconds)


def plan_topology(run: str, settings: dict[str, Any], topology: Topology,
                  mesh, hbm_gib: Optional[float] = None, quiet: bool = True,
                  loop_free_settings: Optional[dict[str, Any]] = None,
                  cache_dir: Optional[str] = None) -> Plan:
  """Compiles the run's train step for `mesh` over the chips of `topology`,
  or reads what an earlier plan of the same program stored in `cache_dir`
  (see `_compile_step` for loops)."""
  import jax  # pylint: disable=g-import-not-at-top
  from hyperprompt_jax.sharding import partitioning  # pylint: disable=g-import-not-at-top

  rules = partitioning.logical_axis_rules()
  trainer, lowered = _lower_step(settings, topology, mesh, rules)
  entry = plan_cache.key(lowered.as_text(), [
      topology.name, str(topology.chip.chip_config_name),
      json.dumps(_TPU_COMPILE_OPTIONS), str(loop_free_settings is not None)])
  stored = plan_cache.load(cache_dir, entry)
  if stored is None:
    step = _compile_step(run, settings, topology, mesh, rules, trainer,
                         lowered, quiet, loop_free_settings)
    plan_cache.save(cache_dir, entry, dataclasses.asdict(step))
  else:
    step = CompiledStep(**stored)

  state_bytes = sum(_sharded_bytes(x)
                    for x in jax.tree.leaves(trainer.abstract_state))
  arguments_outputs = step.argument_bytes + step.output_bytes - step.alias_bytes
  total = arguments_outputs + step.temp_bytes
  hbm = topology.chip.hbm_gib if hbm_gib is None else hbm_gib
  if hbm is None:  # host devices share the host's memory
    hbm = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / (
        mesh.size * GIB)
  hbm_bytes = int(hbm * GIB)
  return Plan(
      run=run, topology=topology.name, chip=topology.chip.name, num_chips=mesh.size,
      mesh=dict(mesh.shape),
      parameter_partitioning_dims=(
          2 if ('embed', 'data') in rules else 1),
      batch_size=settings['train_dataset_cfg'].batch_size,
      feature_lengths={k: s[1] for k, s in _input_shapes(settings).items()
                       if len(s) == 2},
      num_params=sum(x.size for x in jax.tree.leaves(
          trainer.abstract_state.params)),
      state_bytes=state_bytes,
      other_argument_output_bytes=arguments_outputs - state_bytes,
      temp_bytes=step.temp_bytes, total_bytes=total,
      hbm_bytes=hbm_bytes, fits=total <= hbm_bytes, flops=step.flops,
      flops_scaled_for_loops=loop_free_settings is not None,
      bytes_accessed=step.bytes_accessed, ici_bytes=step.ici_bytes,
      loops_without_trip_count=step.loops_without_trip_count,
      step=predict_step(topology.chip, step.flops, step.bytes_accessed,
                        sum(step.ici_bytes.values()), step.optimal_seconds),
      compile_seconds=step.compile_seconds, cached=stored is not None,
      num_hosts=topology.num_hosts)


def _ms(seconds: Optional[float]) -> str:
  return '-' if seconds is None else f'{seconds * 1e3:.1f}'


def format_table(plans: Sequence[Plan], width: int = 0) -> str:
  """Memory: one line per plan; GiB per chip; runs named in `width`."""
  width = max([len(p.run) for p in plans] + [width, 12]) + 1
  columns = [tables.Column('run', width, '<'),
             tables.Column('topology', 11, '<'), tables.Column('chips', 6),
             tables.Column('mesh', 8), tables.Column('dims', 4),
             *[tables.Column(h, 7) for h in ('state', 'other', 'temp',
                                             'total')],
             tables.Column('HBM', 6), tables.Column('fits', 0, '<')]
  rows = [[p.run, p.topology, str(p.num_chips),
           # data x model, aligned on the x
           f"{p.mesh['data']:>4}x{p.mesh['model']:<3}",
           str(p.parameter_partitioning_dims),
           *[f'{b / GIB:.2f}' for b in (p.state_bytes,
                                        p.other_argument_output_bytes,
                                        p.temp_bytes, p.total_bytes)],
           f'{p.hbm_bytes / GIB:.1f}',
           'fits' if p.fits else 'does not fit'] for p in plans]
  return tables.text_table(columns, rows)


def format_step_table(plans: Sequence[Plan], width: int = 0) -> str:
  """Step time: per chip, FLOPs, HBM and ICI traffic, each bound in ms, the
  predicted step, the bound that binds and the MFU it implies."""
  width = max([len(p.run) for p in plans] + [width, 12]) + 1
  columns = [tables.Column('run', width, '<'),
             tables.Column('topology', 11, '<'), tables.Column('TFLOPs', 8),
             tables.Column('HBM GB', 8), tables.Column('ICI GB', 8),
             *[tables.Column(h, 9) for h in ('FLOPs ms', 'HBM ms', 'ICI ms',
                                             'XLA ms', 'step ms')],
             tables.Column('binds', 6), tables.Column('MFU', 6)]
  rows = []
  for p in plans:
    step = p.step
    rows.append([
        p.run, p.topology, f'{p.flops / 1e12:.2f}',
        f'{p.bytes_accessed / 1e9:.2f}',
        f'{sum(p.ici_bytes.values()) / 1e9:.2f}',
        *([_ms(step.flops_seconds), _ms(step.hbm_seconds),
           _ms(step.ici_seconds), _ms(step.xla_seconds), _ms(step.seconds),
           step.binds, f'{step.mfu:.0%}'] if step else ['-'] * 7)])
  return tables.text_table(columns, rows)


def format_feed_table(plans: Sequence[Plan], width: int = 0) -> str:
  """Input feed: per host, rows per batch, core-ms per batch, and the cores
  that keep up with the predicted step."""
  width = max([len(p.run) for p in plans] + [width, 12]) + 1
  columns = [tables.Column('run', width, '<'),
             tables.Column('topology', 11, '<'), tables.Column('hosts', 6),
             tables.Column('rows', 6), tables.Column('core ms', 9),
             tables.Column('step ms', 9), tables.Column('cores', 7)]
  rows = [[p.run, p.topology, str(p.num_hosts),
           str(p.input_feed.host_batch_size),
           _ms(p.input_feed.core_seconds_per_batch),
           _ms(p.step.seconds if p.step else None),
           '-' if p.input_cores is None else f'{p.input_cores:.2f}']
          for p in plans if p.input_feed]
  return tables.text_table(columns, rows)


FEED_LEGEND = (
    "input feed, per host: rows = the host's share of the batch; core ms = "
    'process CPU time per batch of the run\'s pipeline on this host; cores = '
    'core ms / step ms')


STEP_LEGEND = (
    'per chip: TFLOPs, HBM GB (bytes accessed) and ICI GB (bytes sent by '
    'all-gather, reduce-scatter, all-reduce, all-to-all and '
    'collective-permute) of one step, loops counted in full; FLOPs/HBM/ICI '
    "ms = each at the chip's peak bf16 rate, HBM bandwidth and half its "
    "bidirectional ICI bandwidth; XLA ms = XLA's optimal_seconds (loop "
    'bodies once); step = the largest; MFU = FLOPs ms / step ms')


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = gin_utils.command_parser('plan', __doc__)
  gin_utils.add_gin_flags(
      parser, 'gin file of the run (repeatable), as for '
      'python -m hyperprompt_jax.train', ' of every run')
  parser.add_argument('--run', action='append', default=[],
                      help='a run file planned on its own (repeatable), after '
                      'the --gin_file files, e.g. --run=tpu/xl_global_v4_8.gin')
  parser.add_argument('--topology', action='append', default=[],
                      help='v4:AxBxC, v5e:AxB, v5p:AxBxC, v6e:AxB or cpu:N '
                      '(repeatable; '
                      "default: the run's TPU_TOPOLOGY macro)")
  parser.add_argument('--hbm_gib', type=float, default=None,
                      help="memory per chip to fit in, GiB (default: the chip's "
                      'HBM; for cpu:N the host memory / N)')
  parser.add_argument('--output', default=None, help='write JSON here')
  parser.add_argument('--cache_dir', default=plan_cache.default_dir(),
                      help='where compiled results are kept, by program, so '
                      'that planning the same program again skips compiling '
                      "(default: %(default)s; '' keeps none)")
  parser.add_argument('--input_feed', action='store_true',
                      help="measure the run's input pipeline on this host "
                      '(core-seconds per batch of one host) and the host '
                      'cores that keep up with the predicted step')
  parser.add_argument('--input_feed_batches', type=int, default=20,
                      help='batches measured with --input_feed, after 3 of '
                      'warm-up (default: %(default)s)')
  return parser.parse_args(gin_utils.rewrite_gin_args(argv))


def describe(settings: dict[str, Any]) -> str:
  """The run in one line: model size, variant, data shape."""
  module = settings['model'].module
  config, dataset = module.config, settings['train_dataset_cfg']
  hyperprompt = module.hyperprompt
  return (f'd_model {config.emb_dim}, {config.num_encoder_layers}+'
          f'{config.num_decoder_layers} layers, variant {hyperprompt.variant}'
          f' ({hyperprompt.num_tasks} tasks), {dataset.mixture_or_task_name}, '
          f'batch {dataset.batch_size}, lengths '
          f'{dataset.task_feature_lengths}, '
          f"{'packed' if dataset.pack else 'unpacked'}")


def _load_run(gin_files: Sequence[str], args: argparse.Namespace,
              extra_bindings: Sequence[str] = ()
              ) -> tuple[dict[str, Any], list[Topology]]:
  """Parses one run's gin files; its settings and topologies."""
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config()  # each run from its own files only
  gin_utils.parse_gin(gin_files, args.gin_bindings,
                      [p for p in args.gin_search_paths.split(',') if p])
  # After parse_gin's check that every macro given on the command line is
  # read: these rebind what reads them (`num_microbatches =
  # %NUM_MICROBATCHES`), and the check would refuse the user's flag.
  gin.parse_config(list(extra_bindings))
  names = args.topology
  if not names:
    try:
      names = [gin.query_parameter('%TPU_TOPOLOGY')]
    except ValueError:
      raise ValueError(
          f'no --topology and {", ".join(gin_files)} names no TPU_TOPOLOGY: '
          'give one or more, e.g. --topology=v5e:4x4 --topology=cpu:8') from None
  topologies = [parse_topology(t) for t in names]
  prepare_environment(topologies)
  return _run_settings(), topologies


def _loop_free_bindings(settings: dict[str, Any]) -> list[str]:
  """Bindings that take the loops (microbatches, scanned layers) out of a
  run's train step without changing its arithmetic; none if it has none."""
  bindings = []
  trainer_config = settings.get('trainer_config')
  if trainer_config is not None and trainer_config.num_microbatches > 1:
    bindings.append('trainer.TrainerConfig.num_microbatches = 1')
  if getattr(settings['model'].module.config, 'scan_layers', False):
    bindings.append('network.T5Config.scan_layers = False')
    # Its unscanned step: the same arithmetic (each layer recomputed).
    if trainer_config is not None and trainer_config.layerwise_updates:
      bindings.append('trainer.TrainerConfig.layerwise_updates = False')
  return bindings


def _with_input_feed(plan: Plan, settings: dict[str, Any], batches: int,
                     measured: dict[tuple[str, int],
                                    input_feed_lib.FeedCost]) -> Plan:
  """`plan` with its host's input-feed cost, measured once per run and rows
  per host (kept in `measured`)."""
  dataset = settings['train_dataset_cfg']
  rows = dataset.batch_size // plan.num_hosts
  if (plan.run, rows) not in measured:
    measured[plan.run, rows] = input_feed_lib.measure(
        dataset, settings['model'].feature_converter_cls, rows, batches)
  cost = measured[plan.run, rows]
  return dataclasses.replace(
      plan, input_feed=cost,
      input_cores=cost.cores_for(plan.step.seconds) if plan.step else None)


def main(argv: Sequence[str]) -> None:
  args = parse_args(argv)
  runs = [[*args.gin_file, run] for run in args.run] or [args.gin_file]
  if not runs[0]:
    raise ValueError('no run: give its gin files, e.g. '
                     '--gin_file=tpu/base_global_v5e_8.gin or --run=FILE')
  for topology in args.topology:
    parse_topology(topology)
  if args.hbm_gib is not None and args.hbm_gib <= 0:
    raise ValueError(f'bad --hbm_gib={args.hbm_gib}: give GiB per chip, > 0')
  if args.input_feed_batches < 1:
    raise ValueError(f'bad --input_feed_batches={args.input_feed_batches}: '
                     'give a number of batches, >= 1')
  prepare_environment([parse_topology(t) for t in args.topology])
  quiet = '--verbose' not in sys.argv
  # Every run's meshes first: bad input fails before the long compiles.
  for gin_files in runs:
    settings, topologies = _load_run(gin_files, args)
    for topology in topologies:
      make_mesh(settings, topology, quiet)
  # A run is named by its run file, or by all its files.
  names = [' '.join(pathlib.Path(f).stem
                    for f in (files[-1:] if args.run else files))
           for files in runs]
  width = max(len(n) for n in names)
  plans, descriptions, feed_costs = [], {}, {}
  for name, gin_files in zip(names, runs):
    settings, topologies = _load_run(gin_files, args)
    loop_free = None
    if _loop_free_bindings(settings):
      loop_free, _ = _load_run(gin_files, args, _loop_free_bindings(settings))
      # The run's own gin state again: the plan reads its axis rules.
      settings, topologies = _load_run(gin_files, args)
    descriptions[name] = describe(settings)
    print(f'{name}: {descriptions[name]}', flush=True)
    if not plans:
      print(format_table([], width), flush=True)
    for topology in topologies:
      plan = plan_topology(name, settings, topology,
                           make_mesh(settings, topology, quiet),
                           args.hbm_gib, quiet, loop_free, args.cache_dir)
      if args.input_feed:
        plan = _with_input_feed(plan, settings, args.input_feed_batches,
                                feed_costs)
      plans.append(plan)
      print(format_table(plans, width).splitlines()[-1], flush=True)
  if len(plans) > 1:
    print(format_table(plans, width))
  print('GiB per chip: state = parameters + optimizer state; other = the rest '
        'of arguments and outputs (batch, metrics; the new state where it is '
        'not donated); temp = XLA temporaries')
  print(format_step_table(plans, width))
  print(STEP_LEGEND)
  if args.input_feed:
    print(format_feed_table(plans, width))
    print(FEED_LEGEND)
  if args.output:
    with open(args.output, 'w') as f:
      json.dump({'runs': descriptions, 'gin_files': args.gin_file,
                 'gin_bindings': args.gin_bindings,
                 'plans': [dataclasses.asdict(p) for p in plans]}, f, indent=2)
    print(f'wrote {args.output}')


if __name__ == '__main__':
  gin_utils.run_main(main)
