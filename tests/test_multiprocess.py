"""Two processes train one model through jax.distributed on the CPU."""

import os
import re
import socket
import subprocess

from tests import train_runs


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_train_and_checkpoint_together(tmp_path):
  model_dir = tmp_path / 'run'
  address = f'127.0.0.1:{_free_port()}'
  # Gloo gives the CPU backend cross-process collectives.
  env = dict(os.environ, JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo')
  processes = [
      subprocess.Popen(
          train_runs.train_command(
              tmp_path, model_dir, 3, f'--coordinator_address={address}',
              '--num_processes=2', f'--process_id={i}',
              '--gin.train_loop.train.eval_dataset_cfg=None'),
          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=540) for p in processes]
  for p, (_, stderr) in zip(processes, outputs):
    assert p.returncode == 0, stderr[-3000:]
  losses = re.findall(r'\[train step (\d)\] .* loss=([0-9.]+)', outputs[0][0])
  assert [int(step) for step, _ in losses] == [1, 2, 3]
  assert all(float(loss) > 0 for _, loss in losses)
  assert '[train step' not in outputs[1][0]  # Only process 0 logs.
  assert (model_dir / 'checkpoints' / '3').is_dir()
