r"""Runs HyperPrompt-JAX (our trainer or `t5x.train`) on a Cloud TPU VM slice.

A thin layer over `gcloud compute tpus tpu-vm`: every step runs the same
command on every worker of the slice, which is how multi-host JAX starts.

  python -m hyperprompt_jax.tpu_launch create --name=hp --zone=us-central2-b \
      --accelerator_type=v4-32
  python -m hyperprompt_jax.tpu_launch install --name=hp --zone=us-central2-b \
      --repo_url=https://github.com/<you>/hyperprompt-jax
  python -m hyperprompt_jax.tpu_launch run --name=hp --zone=us-central2-b \
      --run_name=glue_base -- python -m t5x.train --gin_search_paths=gin \
      --gin_file=variants/global.gin --gin_file=t5x/models/t5_1_1_base.gin \
      --gin_file=t5x/runs/glue_finetune.gin --gin.MODEL_DIR="'gs://b/m'"
  python -m hyperprompt_jax.tpu_launch logs --name=hp --zone=us-central2-b \
      --run_name=glue_base --num_workers=4 --out_dir=/tmp/logs
  python -m hyperprompt_jax.tpu_launch delete --name=hp --zone=us-central2-b

`--dry_run` prints the gcloud commands instead of running them.

Multi-host start: `run` starts the same command on all workers at once; each
process joins the job through `jax.distributed.initialize()`, which finds the
coordinator and its own id in the TPU VM metadata. `t5x.train` needs nothing
more on TPU; give our trainer `--distributed`, which makes that call.

Preemption: when a spot slice is reclaimed, every worker gets SIGTERM; our
trainer saves the step all processes agree on (JAX's preemption sync point),
logs `Preempted at step N: saved ...` and exits with code 75. Keep MODEL_DIR
on GCS (the VM's disk goes with the VM). To restart, recreate the slice
(`delete`, `create --spot`, `install`) and repeat the same `run` command: the
trainer resumes from MODEL_DIR's latest checkpoint, model and input pipeline
alike; so does `t5x.train`.
"""

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
from typing import List, Sequence

Command = List[str]

REPO_DIR = '~/hyperprompt-jax'
LOG_DIR = '~/hyperprompt_logs'


@dataclasses.dataclass(frozen=True)
class TpuVm:
  """A TPU VM slice and the gcloud commands that act on it."""

  name: str
  zone: str
  project: str | None = None

  def gcloud(self, verb: str, *args: str) -> Command:
    """`gcloud compute tpus tpu-vm <verb> ...` with zone and project."""
    cmd = ['gcloud', 'compute', 'tpus', 'tpu-vm', verb, *args,
           f'--zone={self.zone}']
    return cmd + ([f'--project={self.project}'] if self.project else [])

  def on_workers(self, script: str, worker: str = 'all') -> Command:
    """Runs a bash script over ssh on `worker` ('all' or an index)."""
    return self.gcloud('ssh', self.name, f'--worker={worker}',
                       f'--command={script}')


def create(vm: TpuVm, accelerator_type: str, runtime_version: str,
           spot: bool) -> List[Command]:
  return [vm.gcloud('create', vm.name, f'--accelerator-type={accelerator_type}',
                    f'--version={runtime_version}', *(['--spot'] if spot else []))]


def install(vm: TpuVm, repo_url: str, branch: str,
            pip_extra: Sequence[str]) -> List[Command]:
  """Clones the repo and installs it with JAX for TPU on every worker."""
  venv_pip = f'{REPO_DIR}/.venv/bin/pip'
  steps = [
      f'(test -d {REPO_DIR} || git clone --branch={shlex.quote(branch)} '
      f'{shlex.quote(repo_url)} {REPO_DIR})',
      f'git -C {REPO_DIR} fetch origin {shlex.quote(branch)}',
      f'git -C {REPO_DIR} checkout --force FETCH_HEAD',
      f'python3 -m venv {REPO_DIR}/.venv',
      f'{venv_pip} install --quiet -r {REPO_DIR}/requirements.txt',
      # The same jax version as requirements.txt, plus libtpu.
      f'{venv_pip} install --quiet "jax[tpu]==$({venv_pip} show jax | '
      "sed -n 's/^Version: //p')\"",
      f'{venv_pip} install --quiet --no-deps -e {REPO_DIR}',
  ]
  if pip_extra:
    steps.append(f'{venv_pip} install --quiet {shlex.join(pip_extra)}')
  return [vm.on_workers(' && '.join(steps))]


def run(vm: TpuVm, run_name: str, command: Sequence[str]) -> List[Command]:
  """Starts `command` in the repo on every worker, detached, logging to a file.

  Detached with nohup so that a dropped ssh connection does not stop training.
  Running the same `run` again after a preemption resumes the training run
  from its MODEL_DIR.
  """
  if not command:
    raise ValueError('run needs a command after `--`, e.g. '
                     '`-- python -m hyperprompt_jax.train --gin_file=...`.')
  log = f'{LOG_DIR}/{run_name}.log'
  script = (f'mkdir -p {LOG_DIR} && cd {REPO_DIR} && '
            f'export PATH={REPO_DIR}/.venv/bin:$PATH && '
            f'nohup {shlex.join(command)} > {log} 2>&1 < /dev/null &')
  return [vm.on_workers(script)]


def logs(vm: TpuVm, run_name: str, num_workers: int,
         out_dir: str) -> List[Command]:
  """Copies every worker's log to `out_dir/<run_name>.worker<i>.log`."""
  return [['mkdir', '-p', out_dir]] + [vm.gcloud('scp', f'{vm.name}:{LOG_DIR}/{run_name}.log',
                    os.path.join(out_dir, f'{run_name}.worker{i}.log'),
                    f'--worker={i}') for i in range(num_workers)]


def delete(vm: TpuVm) -> List[Command]:
  return [vm.gcloud('delete', vm.name, '--quiet')]


def count_workers(vm: TpuVm) -> int:
  """Number of hosts of the slice, from `gcloud ... describe`."""
  described = subprocess.run(
      vm.gcloud('describe', vm.name, '--format=json'), check=True,
      capture_output=True, text=True).stdout
  return len(json.loads(described)['networkEndpoints'])


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m hyperprompt_jax.tpu_launch',
      description='Create, set up, run on, and delete a Cloud TPU VM slice.')
  sub = parser.add_subparsers(dest='action', required=True)
  for action in ('create', 'install', 'run', 'logs', 'delete'):
    p = sub.add_parser(action)
    p.add_argument('--name', required=True, help='TPU VM name.')
    p.add_argument('--zone', required=True, help='e.g. us-central2-b.')
    p.add_argument('--project', help='GCP project (default: gcloud config).')
    p.add_argument('--dry_run', action='store_true',
                   help='Print the gcloud commands instead of running them.')
    if action in ('run', 'logs'):
      p.add_argument('--run_name', required=True,
                     help=f'Names the log file {LOG_DIR}/<run_name>.log.')
  create_p = sub.choices['create']
  create_p.add_argument('--accelerator_type', required=True,
                        help='e.g. v4-32, v5litepod-16.')
  create_p.add_argument('--runtime_version', default='tpu-ubuntu2204-base')
  create_p.add_argument('--spot', action='store_true')
  install_p = sub.choices['install']
  install_p.add_argument('--repo_url', required=True,
                         help='git URL of this repository (or your fork).')
  install_p.add_argument('--branch', default='main')
  install_p.add_argument(
      '--pip_extra', nargs='*', default=[],
      help='More pip requirements for every worker, e.g. t5x from source.')
  sub.choices['run'].add_argument(
      'command', nargs=argparse.REMAINDER,
      help='After `--`: the command to run in the repo on every worker.')
  logs_p = sub.choices['logs']
  logs_p.add_argument('--num_workers', type=int,
                      help='Hosts in the slice (default: asks gcloud).')
  logs_p.add_argument('--out_dir', default='.')
  return parser


def commands(args: argparse.Namespace) -> List[Command]:
  """The gcloud commands that carry out the parsed `args`."""
  vm = TpuVm(args.name, args.zone, args.project)
  if args.action == 'create':
    return create(vm, args.accelerator_type, args.runtime_version, args.spot)
  if args.action == 'install':
    return install(vm, args.repo_url, args.branch, args.pip_extra)
  if args.action == 'run':
    command = args.command[1:] if args.command[:1] == ['--'] else args.command
    return run(vm, args.run_name, command)
  if args.action == 'logs':
    if args.num_workers is None and args.dry_run:
      raise ValueError('logs --dry_run cannot ask gcloud for the slice size; '
                       'pass --num_workers.')
    return logs(vm, args.run_name, args.num_workers or count_workers(vm),
                args.out_dir)
  return delete(vm)


def main(argv: Sequence[str] | None = None) -> None:
  args = _parser().parse_args(argv)
  try:
    cmds = commands(args)
  except ValueError as e:
    sys.exit(f'tpu_launch {args.action}: {e}')
  for cmd in cmds:
    if args.dry_run:
      print(shlex.join(cmd))
    else:
      subprocess.run(cmd, check=True)


if __name__ == '__main__':
  main()
