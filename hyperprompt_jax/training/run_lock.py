"""One trainer per MODEL_DIR: a lock file held for the run's lifetime.

Process 0 of a training run creates `MODEL_DIR/trainer.lock` (JSON: host,
pid, start time, a token) and refreshes its modification time every
`HEARTBEAT_SECONDS` from a background thread, so a compile of minutes does
not let it go stale. A second trainer on the same MODEL_DIR finds the lock
and refuses with one line naming the holder, unless the holder is gone: a
process that no longer exists on this host, or a lock nobody refreshed for
`STALE_SECONDS` (a host that died or was reclaimed); such a lock is taken
over with one line. Readers (`infer`, `export_hf`, `plan`) never look at it.

On a local filesystem the lock is created atomically (`O_CREAT | O_EXCL`);
on object stores (`gs://`), which have no such create, it is written after a
check, so two trainers started within the same second may both pass; orbax
itself does not guard a checkpoint directory against two writers.
"""

import dataclasses
import json
import os
import socket
import threading
import time
import uuid
from typing import Optional

import tensorflow as tf

LOCK_FILE = 'trainer.lock'
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 300.0


class RunLockedError(ValueError):
  """Another trainer holds MODEL_DIR; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Holder:
  """Who holds a lock, as written in its file."""
  host: str
  pid: int
  started: str  # ISO 8601, UTC.
  token: str

  def describe(self) -> str:
    return f'host {self.host}, pid {self.pid}, started {self.started}'


def _is_local(path: str) -> bool:
  return '://' not in path


def _read(path: str) -> Optional[Holder]:
  """The lock's holder; None if the file is damaged (a write cut short)."""
  try:
    with tf.io.gfile.GFile(path) as f:
      return Holder(**json.loads(f.read()))
  except (json.JSONDecodeError, TypeError, ValueError):
    return None


def _age_seconds(path: str) -> float:
  """Seconds since the lock was last refreshed."""
  return time.time() - tf.io.gfile.stat(path).mtime_nsec / 1e9


def _gone(path: str, holder: Optional[Holder]) -> Optional[str]:
  """Why the lock's holder is gone, or None if it may still be running."""
  if holder is None:
    return 'its lock file is damaged'
  if holder.host == socket.gethostname():
    try:
      os.kill(holder.pid, 0)
    except ProcessLookupError:
      return f'its process ({holder.describe()}) no longer exists'
    except PermissionError:
      pass  # Another user's live process.
  age = _age_seconds(path)
  if age > STALE_SECONDS:
    return (f'its lock ({holder.describe()}) was last refreshed '
            f'{age / 60:.0f} minutes ago')
  return None


class RunLock:
  """The lock of one MODEL_DIR, held from `acquire` to `release`."""

  def __init__(self, model_dir: str):
    self.path = os.path.join(model_dir, LOCK_FILE)
    self._holder = Holder(
        host=socket.gethostname(), pid=os.getpid(),
        started=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        token=uuid.uuid4().hex)
    self._text = json.dumps(dataclasses.asdict(self._holder))
    self._stop = threading.Event()
    self._heartbeat: Optional[threading.Thread] = None

  def _create(self) -> bool:
    """Writes our lock file unless one exists; whether it did."""
    if _is_local(self.path):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        return False
      with os.fdopen(fd, 'w') as f:
        f.write(self._text)
      return True
    if tf.io.gfile.exists(self.path):
      return False
    self._write()
    return True

  def _write(self) -> None:
    """(Re)writes our lock file whole (an object store has no exclusive
    create and no touch)."""
    with tf.io.gfile.GFile(self.path, 'w') as f:
      f.write(self._text)

  def acquire(self) -> None:
    """Takes the lock (or over a gone holder's, with one printed line).

    Raises:
      RunLockedError: a trainer that may be running holds it.
    """
    while not self._create():
      try:
        holder = _read(self.path)
        gone = _gone(self.path, holder)
      except tf.errors.NotFoundError:
        continue  # Released meanwhile.
      if gone is None:
        raise RunLockedError(
            f'MODEL_DIR {os.path.dirname(self.path)} is in use by another '
            f'trainer ({holder.describe()}): wait for it or stop it, or use '
            f'another MODEL_DIR; if it is gone, delete {self.path}')
      print(f'Took over {self.path}: {gone}', flush=True)
      try:
        tf.io.gfile.remove(self.path)
      except tf.errors.NotFoundError:
        pass
    self._heartbeat = threading.Thread(target=self._refresh, daemon=True,
                                       name='run_lock_heartbeat')
    self._heartbeat.start()

  def _holds(self) -> bool:
    """Whether the lock file is (still) ours."""
    try:
      return _read(self.path) == self._holder
    except tf.errors.NotFoundError:
      return False

  def _refresh(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      if not self._holds():
        return  # Taken over or removed (this process was stopped for long).
      if _is_local(self.path):
        os.utime(self.path)
      else:
        self._write()

  def release(self) -> None:
    """Removes the lock if it is still ours."""
    self._stop.set()
    if self._heartbeat is not None:
      self._heartbeat.join()
    if self._holds():
      tf.io.gfile.remove(self.path)
