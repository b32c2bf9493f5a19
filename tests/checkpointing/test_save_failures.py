"""A save that fails (disk full, permission or quota lost): one line naming
MODEL_DIR's checkpoints, the cause and the fix, exit code 74, no partial
folder left, earlier checkpoints untouched."""

import errno
import subprocess

import pytest

from hyperprompt_jax.checkpointing import iterator_checkpoint
from hyperprompt_jax import errors
from tests import train_runs

_NO_EVAL = '--gin.train_loop.train.eval_dataset_cfg=None'


def _leftovers(model_dir):
  return [p.name for p in (model_dir / 'checkpoints').iterdir()
          if not p.name.isdigit()]


def test_a_failed_save_keeps_the_earlier_checkpoint(tmp_path, capfd,
                                                     monkeypatch):
  """The save of step 4 fails (an injected ENOSPC where the pipeline state
  is written); step 2, saved before, stays and the same command resumes
  from it. Catches a traceback, a partial `4.orbax-checkpoint-tmp` left
  behind, and earlier checkpoints removed by the failed save."""
  model_dir = tmp_path / 'run'
  save = iterator_checkpoint.IteratorHandler.save

  def failing_save(self, directory, args):
    if directory.parent.name.startswith('4.'):
      raise OSError(errno.ENOSPC, 'No space left on device')
    save(self, directory, args)

  monkeypatch.setattr(iterator_checkpoint.IteratorHandler, 'save',
                      failing_save)
  result = train_runs.train_in_process(tmp_path, model_dir, 6, _NO_EVAL)
  assert result.returncode == errors.SAVE_FAILED_EXIT_CODE
  [line] = [l for l in capfd.readouterr().err.splitlines()
            if l.startswith('error: ')]
  assert line == (
      f"error: could not save checkpoint 4 in {model_dir / 'checkpoints'} "
      '(No space left on device; step 2 is kept): free space, or restore '
      'write permission or quota there, then run the same command again to '
      'resume')
  assert train_runs.steps(model_dir) == [2] and not _leftovers(model_dir)

  monkeypatch.setattr(iterator_checkpoint.IteratorHandler, 'save', save)
  resumed = train_runs.train_in_process(tmp_path, model_dir, 6, _NO_EVAL)
  assert resumed.returncode == 0, resumed.stderr
  assert 'Resumed from step 2' in resumed.stdout


@pytest.fixture
def full_disk(tmp_path):
  """A 1 MiB tmpfs (skips where this machine may not mount one)."""
  mount_point = tmp_path / 'full_disk'
  mount_point.mkdir()
  mounted = subprocess.run(
      ['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(mount_point)],
      capture_output=True)
  if mounted.returncode:
    pytest.skip('cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)')
  yield mount_point
  subprocess.run(['umount', str(mount_point)], check=True)


def test_a_full_disk_is_one_line_and_leaves_nothing_partial(tmp_path,
                                                            full_disk):
  """MODEL_DIR on a 1 MiB tmpfs: the first save runs out of space. Catches
  TensorFlow's and orbax's tracebacks, an absl ERROR line, the 'coroutine
  was never awaited' warning and a `*.orbax-checkpoint-tmp` folder left."""
  model_dir = full_disk / 'run'
  result = train_runs.train(tmp_path, model_dir, 4, _NO_EVAL)
  assert result.returncode == errors.SAVE_FAILED_EXIT_CODE, result.stderr
  assert train_runs.error_line(result) == (
      f"error: could not save checkpoint 2 in {model_dir / 'checkpoints'} "
      '(No space left on device; no earlier checkpoint): free space, or '
      'restore write permission or quota there, then run the same command '
      'again to resume')
  assert result.stderr.strip().splitlines() == [
      train_runs.error_line(result)], result.stderr
  assert not _leftovers(model_dir) and not train_runs.steps(model_dir)
