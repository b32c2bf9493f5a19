"""One trainer per MODEL_DIR: the lock refuses a second trainer with one
line, is taken over from a holder that is gone, and is refreshed while
held."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from hyperprompt_jax.training import run_lock
from tests import train_runs


def _write_lock(model_dir, host, pid, age_seconds=0.0):
  path = model_dir / run_lock.LOCK_FILE
  path.write_text(json.dumps({'host': host, 'pid': pid,
                              'started': '2026-12-04T00:00:00Z',
                              'token': 'theirs'}))
  when = time.time() - age_seconds
  os.utime(path, (when, when))
  return path


def _gone_pid() -> int:
  """The pid of a process that has exited."""
  proc = subprocess.Popen([sys.executable, '-c', ''])
  proc.wait()
  return proc.pid


def test_a_held_lock_refuses_a_second_holder_until_released(tmp_path):
  """Catches a second trainer that writes MODEL_DIR beside the first."""
  first = run_lock.RunLock(str(tmp_path))
  first.acquire()
  holder = json.loads((tmp_path / run_lock.LOCK_FILE).read_text())
  assert holder['host'] == socket.gethostname()
  assert holder['pid'] == os.getpid()
  with pytest.raises(run_lock.RunLockedError) as error:
    run_lock.RunLock(str(tmp_path)).acquire()
  assert str(error.value) == (
      f'MODEL_DIR {tmp_path} is in use by another trainer (host '
      f"{holder['host']}, pid {os.getpid()}, started {holder['started']}): "
      'wait for it or stop it, or use another MODEL_DIR; if it is gone, '
      f'delete {tmp_path / run_lock.LOCK_FILE}')
  first.release()
  assert not (tmp_path / run_lock.LOCK_FILE).exists()
  second = run_lock.RunLock(str(tmp_path))
  second.acquire()
  second.release()


@pytest.mark.parametrize('holder', ['exited', 'stale', 'damaged'])
def test_a_gone_holders_lock_is_taken_over_with_one_line(tmp_path, capsys,
                                                         holder):
  """A process of this host that exited (kill -9 leaves its lock), a lock
  of another host not refreshed for longer than STALE_SECONDS, a lock file
  cut short: taken over, saying why. Catches a dead trainer blocking its
  MODEL_DIR for ever."""
  path = tmp_path / run_lock.LOCK_FILE
  if holder == 'exited':
    _write_lock(tmp_path, socket.gethostname(), _gone_pid())
    why = 'no longer exists'
  elif holder == 'stale':
    _write_lock(tmp_path, 'another-host', 1,
                age_seconds=run_lock.STALE_SECONDS + 60)
    why = 'was last refreshed 6 minutes ago'
  else:
    path.write_text('{"host": "ano')
    why = 'its lock file is damaged'
  lock = run_lock.RunLock(str(tmp_path))
  lock.acquire()
  [line] = capsys.readouterr().out.splitlines()
  assert line.startswith(f'Took over {path}: ') and why in line, line
  assert json.loads(path.read_text())['pid'] == os.getpid()
  lock.release()


def test_a_live_lock_of_another_host_is_respected(tmp_path):
  """Refreshed a minute ago on another host: its trainer may be running."""
  _write_lock(tmp_path, 'another-host', 1, age_seconds=60)
  with pytest.raises(run_lock.RunLockedError,
                     match='in use by another trainer .host another-host'):
    run_lock.RunLock(str(tmp_path)).acquire()


def test_the_holder_refreshes_its_lock(tmp_path, monkeypatch):
  """A trainer compiling for minutes keeps its lock fresh (else another host
  would take it over as stale)."""
  monkeypatch.setattr(run_lock, 'HEARTBEAT_SECONDS', 0.05)
  lock = run_lock.RunLock(str(tmp_path))
  lock.acquire()
  path = tmp_path / run_lock.LOCK_FILE
  os.utime(path, (0, 0))
  time.sleep(0.5)
  assert time.time() - path.stat().st_mtime < 5
  lock.release()


def test_a_second_trainer_is_refused_and_a_killed_ones_lock_taken_over(
    tmp_path):
  """Trainer A runs; trainer B on the same MODEL_DIR ends with one line
  naming A, and A goes on. After kill -9 of A, B takes the lock over with
  one line and resumes A's checkpoint."""
  model_dir = tmp_path / 'run'
  no_eval = '--gin.train_loop.train.eval_dataset_cfg=None'
  first = subprocess.Popen(
      train_runs.train_command(tmp_path, model_dir, 100000, no_eval),
      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  for line in first.stdout:
    if line.startswith('[train step 2]'):
      break
  second = train_runs.train(tmp_path, model_dir, 4, no_eval)
  assert train_runs.error_line(second) == (
      f'error: MODEL_DIR {model_dir} is in use by another trainer (host '
      f'{socket.gethostname()}, pid {first.pid}, started '
      f"{json.loads((model_dir / run_lock.LOCK_FILE).read_text())['started']}"
      '): wait for it or stop it, or use another MODEL_DIR; if it is gone, '
      f'delete {model_dir / run_lock.LOCK_FILE}')
  assert first.poll() is None
  first.send_signal(signal.SIGKILL)
  first.wait()
  saved = train_runs.steps(model_dir)
  assert saved
  resumed = train_runs.train(tmp_path, model_dir, saved[-1] + 1, no_eval)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert (f'Took over {model_dir / run_lock.LOCK_FILE}: its process (host '
          f'{socket.gethostname()}, pid {first.pid}, ') in resumed.stdout
  assert f'Resumed from step {saved[-1]}' in resumed.stdout
  assert not (model_dir / run_lock.LOCK_FILE).exists()
