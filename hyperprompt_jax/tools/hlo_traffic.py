"""Bytes a compiled XLA program moves per device, read from its HLO text.

Two figures for the pod planner's step-time bounds:

* ICI bytes: what each device sends over the chip interconnect for the
  program's collectives, by the ring algorithms XLA's TPU emitters use. For a
  collective over groups of n devices, with B the bytes of one device's
  operand(s):

    all-gather          (n - 1) * B          (B is 1/n of the gathered result)
    reduce-scatter      (n - 1) / n * B
    all-reduce          2 * (n - 1) / n * B  (a reduce-scatter, then an
                                              all-gather)
    all-to-all          (n - 1) / n * B
    collective-permute  B

* loop multipliers: XLA's cost analysis counts a while loop's body once; a
  computation that runs inside loops is weighted here by the product of their
  trip counts, so the planner can scale the cost analysis' bytes accessed the
  same way (`bytes_accessed_scale`).

The HLO is the text of `jax.stages.Compiled.as_text()` on any backend.
"""

import dataclasses
import math
import re
from typing import Iterator, Optional

# Bits of one element, by HLO element type; types not listed (token, opaque)
# hold no array data.
_ELEMENT_BITS = {
    'pred': 8, 's2': 2, 'u2': 2, 's4': 4, 'u4': 4, 's8': 8, 'u8': 8,
    's16': 16, 'u16': 16, 'f16': 16, 'bf16': 16, 's32': 32, 'u32': 32,
    'f32': 32, 's64': 64, 'u64': 64, 'f64': 64, 'c64': 64, 'c128': 128,
}
_ARRAY = re.compile(r'\b([a-z][a-z0-9]*)\[([0-9,]*)\]')

# The collectives that cross the interconnect, by opcode; the asynchronous
# `-start` forms carry the operands (their `-done` halves move nothing new).
COLLECTIVES = ('all-gather', 'reduce-scatter', 'all-reduce', 'all-to-all',
               'collective-permute')
_OPCODES = {**{c: c for c in COLLECTIVES},
            **{f'{c}-start': c for c in COLLECTIVES}}

# Instructions that read or write no memory of their own: they name, alias or
# sequence other buffers, or hand work to called computations (counted there).
_NO_TRAFFIC = frozenset((
    'parameter', 'constant', 'tuple', 'get-tuple-element', 'bitcast',
    'while', 'call', 'conditional', 'after-all', 'partition-id', 'replica-id',
    'add-dependency', 'opt-barrier', 'all-gather-done', 'all-reduce-done',
    'collective-permute-done', 'copy-done', 'async-done', 'send-done',
    'recv-done'))

_HEADER = re.compile(r'^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$')
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$')


def array_bytes(shape: str) -> int:
  """Bytes of the arrays in an HLO shape, e.g. `(f32[2,3]{1,0}, s8[4])` -> 28."""
  bits = 0
  for dtype, dims in _ARRAY.findall(shape):
    size = math.prod(int(d) for d in dims.split(',') if d)
    bits += _ELEMENT_BITS.get(dtype, 0) * size
  return bits // 8


@dataclasses.dataclass(frozen=True)
class Instruction:
  """One HLO instruction: its result shape, opcode, operands, attributes."""
  name: str
  shape: str
  opcode: str
  operands: tuple[str, ...]
  operand_text: str  # between the opcode's parentheses, e.g. `8` of a constant
  attributes: str


@dataclasses.dataclass
class Computation:
  name: str
  instructions: list[Instruction]
  is_entry: bool = False

  def shapes(self) -> dict[str, str]:
    return {i.name: i.shape for i in self.instructions}


def _balanced(text: str, start: int) -> int:
  """Index just past the bracket group opening at text[start]."""
  closing = {'(': ')', '{': '}', '[': ']'}
  stack = []
  for i in range(start, len(text)):
    c = text[i]
    if c in closing:
      stack.append(closing[c])
    elif stack and c == stack[-1]:
      stack.pop()
      if not stack:
        return i + 1
  raise ValueError(f'unbalanced HLO text: {text[start:start + 80]!r}')


def _parse_instruction(line: str) -> Optional[Instruction]:
  match = _INSTRUCTION.match(line)
  if not match:
    return None
  name, rest = match.groups()
  # The shape is a tuple in parentheses or one array token (no spaces).
  end = _balanced(rest, 0) if rest.startswith('(') else rest.find(' ')
  shape, rest = rest[:end], rest[end:].lstrip()
  opcode_match = re.match(r'([a-z][\w\-]*)\(', rest)
  if not opcode_match:
    return None
  opcode = opcode_match.group(1)
  close = _balanced(rest, len(opcode))
  operand_text = rest[len(opcode) + 1:close - 1]
  operands = tuple(re.findall(r'%([\w.\-]+)', operand_text))
  return Instruction(name, shape, opcode, operands, operand_text,
                     rest[close:])


def parse_module(text: str) -> dict[str, Computation]:
  """Computation name -> Computation, from an HLO module's text."""
  computations, current = {}, None
  for line in text.splitlines():
    if current is None:
      header = _HEADER.match(line)
      if header and '=' not in line.split('(')[0]:
        current = Computation(header.group(2), [], bool(header.group(1)))
      continue
    if line.strip() == '}':
      computations[current.name] = current
      current = None
      continue
    instruction = _parse_instruction(line)
    if instruction is not None:
      current.instructions.append(instruction)
  return computations


def _called(instruction: Instruction) -> Iterator[str]:
  """Computations an instruction calls (fusions, loops, branches, calls)."""
  for key in ('calls', 'body', 'to_apply', 'condition'):
    for name in re.findall(rf'\b{key}=%?([\w.\-]+)', instruction.attributes):
      yield name
  for group in re.findall(r'branch_computations=\{([^}]*)\}',
                          instruction.attributes):
    yield from re.findall(r'%?([\w.\-]+)', group)


def trip_count(loop: Instruction,
               computations: dict[str, Computation]) -> Optional[int]:
  """Iterations of a while loop, or None where the HLO does not say.

  XLA's loop analysis writes `known_trip_count` into the backend config (CPU,
  GPU); TPU programs lack it, and there the condition compares the
  induction variable with a constant (`i < N`): JAX's scans and fori_loops
  count from 0 in steps of 1, so N is the trip count.
  """
  known = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', loop.attributes)
  if known:
    return int(known.group(1))
  condition = re.search(r'\bcondition=%?([\w.\-]+)', loop.attributes)
  if not condition or condition.group(1) not in computations:
    return None
  instructions = computations[condition.group(1)].instructions
  integers = {i.name: int(i.operand_text) for i in instructions
              if i.opcode == 'constant' and re.fullmatch(r'-?\d+',
                                                         i.operand_text)}
  for i in instructions:
    if i.opcode == 'compare' and 'direction=LT' in i.attributes:
      bounds = [integers[o] for o in i.operands if o in integers]
      if len(bounds) == 1:
        return bounds[0]
  return None


def group_size(instruction: Instruction, num_devices: int) -> int:
  """Devices in each of a collective's replica groups.

  Three spellings: explicit `{{0,2},{1,3}}`, iota `[2,2]<=[4]` (groups x
  size), TPU's `mesh['axis_0'=2,'axis_1'=4] {'axis_1'}` (the named axes);
  `{}` or none means all devices.
  """
  attributes = instruction.attributes
  mesh = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}",
                   attributes)
  if mesh:
    sizes = dict(re.findall(r"'([^']+)'=(\d+)", mesh.group(1)))
    return math.prod(int(sizes[a]) for a in re.findall(r"'([^']+)'",
                                                        mesh.group(2)))
  iota = re.search(r'replica_groups=\[(\d+),(\d+)\]<=', attributes)
  if iota:
    return int(iota.group(2))
  explicit = re.search(r'replica_groups=\{\{([^}]*)\}', attributes)
  if explicit:
    return len(explicit.group(1).split(','))
  return num_devices


def sent_bytes(opcode: str, operand_bytes: int, n: int) -> float:
  """Bytes one device sends for a collective (the ring formulas above)."""
  if opcode == 'collective-permute':
    return float(operand_bytes)
  if n <= 1:
    return 0.0
  factor = {'all-gather': n - 1, 'reduce-scatter': (n - 1) / n,
            'all-reduce': 2 * (n - 1) / n, 'all-to-all': (n - 1) / n}
  return factor[opcode] * operand_bytes


@dataclasses.dataclass(frozen=True)
class Traffic:
  """What one device moves per run of a program, loops counted in full.

  ici_bytes: bytes sent over the interconnect, per collective kind.
  bytes_accessed_scale: a program's memory traffic with each loop body
    counted once per iteration, over the same traffic with each body counted
    once (as XLA's cost analysis counts it); both estimated from the
    operands and results of the instructions outside fusions.
  loops_without_trip_count: while loops whose trip count the HLO does not
    give; they count once.
  """
  ici_bytes: dict[str, float]
  bytes_accessed_scale: float
  loops_without_trip_count: int


def _executions(computations: dict[str, Computation]
                ) -> tuple[dict[str, int], set[str], int]:
  """Times each computation runs per program run; the fusion computations;
  how many loops have no known trip count."""
  counts, fused, unknown = {}, set(), 0

  def visit(name: str, times: int, is_fusion: bool) -> None:
    nonlocal unknown
    counts[name] = counts.get(name, 0) + times
    if is_fusion:
      fused.add(name)
    for instruction in computations[name].instructions:
      if instruction.opcode in ('async-update', 'async-done'):
        continue  # the same called computation as their async-start
      for callee in _called(instruction):
        if callee not in computations or f'condition=%{callee}' in (
            instruction.attributes) or f'to_apply=%{callee}' in (
                instruction.attributes):
          continue  # conditions and reducers move no array data
        repeat = 1
        if instruction.opcode == 'while':
          trips = trip_count(instruction, computations)
          unknown += trips is None
          repeat = trips or 1
        visit(callee, times * repeat,
              is_fusion or instruction.opcode == 'fusion')

  [entry] = [c.name for c in computations.values() if c.is_entry]
  visit(entry, 1, False)
  return counts, fused, unknown


def _instruction_bytes(instruction: Instruction, shapes: dict[str, str]) -> int:
  """Operand and result bytes of an instruction that touches memory."""
  if instruction.opcode in _NO_TRAFFIC:
    return 0
  return array_bytes(instruction.shape) + sum(
      array_bytes(shapes.get(o, '')) for o in instruction.operands)


def analyse(hlo_text: str) -> Traffic:
  """The interconnect and memory traffic of a compiled program's HLO text."""
  computations = parse_module(hlo_text)
  partitions = re.search(r'num_partitions=(\d+)', hlo_text)
  num_devices = int(partitions.group(1)) if partitions else 1
  counts, fused, unknown = _executions(computations)
  ici = {c: 0.0 for c in COLLECTIVES}
  # TPU splits an asynchronous collective into start, continuation and done
  # fusions, each repeating the collective with its channel_id: inside
  # fusions one collective counts once per channel and kind.
  seen = set()
  once = in_full = 0
  for name, times in counts.items():
    computation = computations[name]
    shapes = computation.shapes()
    for instruction in computation.instructions:
      if name not in fused:
        traffic = _instruction_bytes(instruction, shapes)
        once += traffic
        in_full += traffic * times
      kind = _OPCODES.get(instruction.opcode)
      if kind is None:
        continue
      if name in fused:
        channel = re.search(r'channel_id=(\d+)', instruction.attributes)
        key = (kind, channel and channel.group(1), times)
        if channel and key in seen:
          continue
        seen.add(key)
      operand_bytes = sum(array_bytes(shapes.get(o, ''))
                          for o in instruction.operands)
      ici[kind] += times * sent_bytes(
          kind, operand_bytes, group_size(instruction, num_devices))
  return Traffic(ici_bytes=ici,
                 bytes_accessed_scale=in_full / once if once else 1.0,
                 loops_without_trip_count=unknown)
