"""Tests of the Cloud TPU VM launch tool, in dry-run (no gcloud needed)."""

import shlex

import pytest

from hyperprompt_jax.tools import tpu_launch


def _dry_run(capsys, action, *argv):
  # Before the arguments: everything after `run ... --` is the user's command.
  tpu_launch.main([action, '--dry_run', *argv])
  return [shlex.split(line) for line in capsys.readouterr().out.splitlines()]


def _remote_script(cmd):
  (script,) = [a for a in cmd if a.startswith('--command=')]
  return script[len('--command='):]


def test_create_names_slice_zone_project_and_spot(capsys):
  (cmd,) = _dry_run(capsys, 'create', '--name=hp', '--zone=us-central2-b',
                    '--project=proj', '--accelerator_type=v4-32', '--spot')
  assert cmd[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', 'hp']
  for flag in ('--accelerator-type=v4-32', '--version=tpu-ubuntu2204-base',
               '--spot', '--zone=us-central2-b', '--project=proj'):
    assert flag in cmd


def test_install_runs_on_every_worker_with_extra_requirements(capsys):
  (cmd,) = _dry_run(capsys, 'install', '--name=hp', '--zone=z',
                    '--repo_url=https://example.com/r.git',
                    '--pip_extra', 'pkg-a==1', 'pkg b')
  assert '--worker=all' in cmd
  script = _remote_script(cmd)
  assert 'git clone --branch=main https://example.com/r.git' in script
  assert '"jax[tpu]==$(' in script
  assert script.endswith("install --quiet pkg-a==1 'pkg b'")


def test_run_passes_the_command_through_intact_on_all_workers(capsys):
  user_cmd = ['python', '-m', 't5x.train', '--gin_file=gin/t5x/runs/x.gin',
              "--gin.MODEL_DIR='gs://bucket/model dir'"]
  (cmd,) = _dry_run(capsys, 'run', '--name=hp', '--zone=z', '--run_name=r1',
                    '--', *user_cmd)
  assert '--worker=all' in cmd
  script = _remote_script(cmd)
  assert 'export PATH=~/hyperprompt-jax/.venv/bin:$PATH' in script
  # What the remote shell runs after nohup is exactly the user's command.
  words = shlex.split(script.split('nohup ', 1)[1])
  assert words[:len(user_cmd)] == user_cmd
  assert words[len(user_cmd):] == ['>', '~/hyperprompt_logs/r1.log', '2>&1',
                                   '<', '/dev/null', '&']


def test_logs_copies_one_file_per_worker(capsys):
  cmds = _dry_run(capsys, 'logs', '--name=hp', '--zone=z', '--run_name=r1',
                  '--num_workers=3', '--out_dir=/tmp/out')
  assert cmds[0] == ['mkdir', '-p', '/tmp/out']
  scps = cmds[1:]
  assert [c[5] for c in scps] == ['hp:~/hyperprompt_logs/r1.log'] * 3
  assert [c[6] for c in scps] == [f'/tmp/out/r1.worker{i}.log' for i in range(3)]
  assert [c[7] for c in scps] == [f'--worker={i}' for i in range(3)]


def test_delete_is_quiet(capsys):
  (cmd,) = _dry_run(capsys, 'delete', '--name=hp', '--zone=z')
  assert cmd[4:7] == ['delete', 'hp', '--quiet']


@pytest.mark.parametrize('argv, message', [
    (['run', '--name=hp', '--zone=z', '--run_name=r'], 'needs a command'),
    (['logs', '--name=hp', '--zone=z', '--run_name=r'], '--num_workers'),
])
def test_bad_input_exits_with_a_clear_message(argv, message):
  with pytest.raises(SystemExit, match=message):
    tpu_launch.main([argv[0], '--dry_run', *argv[1:]])
