"""The pod planner's compiled results, kept on disk by program.

JAX's persistent compilation cache writes TPU programs compiled for a
topology without devices but cannot read them back (jax 0.10.2: "PjRtCompiler
must be constructed with a Client to call DeserializeLoadedExecutable"), so
the planner keeps what it reads from a compiled program instead: memory and
cost analyses and HLO traffic, as JSON. The key is a SHA-256 of everything
that decides them: the lowered program's text (model, shapes, shardings,
donation), the topology, the compiler options, and the versions of jax,
jaxlib and libtpu.
"""

import hashlib
import importlib.metadata
import json
import os
import pathlib
from typing import Any, Optional, Sequence

# Raised when the stored fields change, so older entries are not read.
_FORMAT = 1


def default_dir() -> str:
  """~/.cache/hyperprompt_jax/plans, or under $XDG_CACHE_HOME."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
  return os.path.join(base, 'hyperprompt_jax', 'plans')


def _version(package: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return 'absent'


def key(program_text: str, parts: Sequence[str]) -> str:
  """The entry of a lowered program compiled as `parts` say (topology,
  options, ...), for the installed compiler versions."""
  digest = hashlib.sha256()
  for part in (str(_FORMAT), *(_version(p) for p in ('jax', 'jaxlib',
                                                     'libtpu')),
               *parts, program_text):
    digest.update(part.encode())
    digest.update(b'\0')
  return digest.hexdigest()


def load(cache_dir: Optional[str], entry: str) -> Optional[dict[str, Any]]:
  """A stored entry, or None (no cache, a miss, or an unreadable file)."""
  if not cache_dir:
    return None
  try:
    return json.loads((pathlib.Path(cache_dir) / f'{entry}.json').read_text())
  except (OSError, ValueError):
    return None


def save(cache_dir: Optional[str], entry: str, value: dict[str, Any]) -> None:
  """Stores an entry; written to a temporary name first, so a concurrent
  plan never reads half a file."""
  if not cache_dir:
    return
  folder = pathlib.Path(cache_dir)
  folder.mkdir(parents=True, exist_ok=True)
  partial = folder / f'{entry}.{os.getpid()}.tmp'
  partial.write_text(json.dumps(value))
  partial.replace(folder / f'{entry}.json')
