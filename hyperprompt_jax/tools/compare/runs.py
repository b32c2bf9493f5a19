"""The comparison's runs: each trained by the standalone trainer, one at a
time, continued where it stopped, skipped once finished, and read back."""

import dataclasses
import glob
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from hyperprompt_jax import errors
from hyperprompt_jax.tools.compare import sweep
from hyperprompt_jax.training import preemption

RESULTS_FILE = 'eval_results.json'
LOG_FILE = 'compare.log'
CACHE_DIR = 'jax_cache'


@dataclasses.dataclass(frozen=True)
class RunResult:
  """A finished run: per-task metrics and its median train-step time."""
  run: sweep.Run
  results: dict[str, dict[str, float]]
  step_time_seconds: Optional[float]


def train_command(config: sweep.CompareConfig, run: sweep.Run) -> list[str]:
  """`python -m hyperprompt_jax.train ...` of one run."""
  files, bindings = config.gin_args(run)
  search = ([f'--gin_search_paths={",".join(config.gin_search_paths)}']
            if config.gin_search_paths else [])
  return [sys.executable, '-m', 'hyperprompt_jax.train', *search,
          *[f'--gin_file={f}' for f in files],
          *[f'--gin_bindings={b}' for b in bindings]]


def finished_results(model_dir: str, steps: int
                     ) -> Optional[dict[str, dict[str, float]]]:
  """{task: {metric: value}} of MODEL_DIR/eval_results.json if it is at
  `steps`, else None."""
  path = os.path.join(model_dir, RESULTS_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    saved = json.load(f)
  return saved['results'] if saved['step'] == steps else None


def logged_windows(model_dir: str, tag: str) -> list[float]:
  """A run's logged `tag` values, each trainer session's first left out.

  Each TensorBoard events file under MODEL_DIR/train is one session of the
  trainer (a resumed run adds one); its first window includes compilation.
  """
  windows = []
  for path in sorted(glob.glob(os.path.join(model_dir, 'train', '*tfevents*'))):
    values = [float(tf.make_ndarray(v.tensor)) if v.HasField('tensor')
              else v.simple_value
              for event in tf.compat.v1.train.summary_iterator(path)
              for v in event.summary.value if v.tag == tag]
    windows += values[1:]
  return windows


def step_time_seconds(model_dir: str) -> Optional[float]:
  """Median of the run's logged `step_time_seconds` windows, compile excluded."""
  windows = logged_windows(model_dir, 'step_time_seconds')
  return float(np.median(windows)) if windows else None


def _train(command: list[str], log_path: str, cache_dir: str) -> int:
  """Runs the trainer with its output appended to `log_path`; its exit code.

  Unless the environment names one, runs share the JAX compilation cache
  `cache_dir`: the seeds of a setting compile the same functions. The
  trainer runs in a session of its own, so Ctrl-C in the terminal reaches
  this process only; SIGTERM and SIGINT to this process are passed on once
  each, so the run saves and exits with its code (`preemption.EXIT_CODE`,
  `errors.INTERRUPTED_EXIT_CODE`), and a second Ctrl-C stops it at once.
  """
  with open(log_path, 'a') as log:
    log.write(f'$ {shlex.join(command)}\n')
    log.flush()
    env = dict(os.environ)
    env.setdefault('JAX_COMPILATION_CACHE_DIR', cache_dir)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env=env, start_new_session=True)
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, lambda signum, _: process.send_signal(
        signum)) for s in signals}
    try:
      return process.wait()
    finally:
      for s in signals:
        signal.signal(s, previous[s])

def _failure(log_path: str) -> str:
  """The log's `error: ...` line, else its last line."""
  with open(log_path) as f:
    lines = [l.strip() for l in f if l.strip()]
  errors = [l for l in lines if l.startswith('error: ')]
  return (errors or lines or ['(no output)'])[-1]


def _train_run(config: sweep.CompareConfig, run: sweep.Run, label: str
               ) -> Optional[dict[str, dict[str, float]]]:
  """Trains `run` (continuing it if started) and evaluates it.

  Returns:
    Its per-task results, or None (said in one line) if it failed.

  Raises:
    preemption.Preempted: the run was preempted or interrupted (saved);
      run again.
  """
  model_dir = config.model_dir(run)
  os.makedirs(model_dir, exist_ok=True)
  log_path = os.path.join(model_dir, LOG_FILE)
  print(f'{label} {run.name}: training to step {config.steps} '
        f'(log: {log_path})', flush=True)
  start = time.time()
  code = _train(train_command(config, run), log_path,
                os.path.join(config.output_dir, CACHE_DIR))
  if code in (preemption.EXIT_CODE, errors.INTERRUPTED_EXIT_CODE):
    cause = 'preempted' if code == preemption.EXIT_CODE else 'interrupted'
    raise preemption.Preempted(
        f'{run.name} was {cause} (saved in {model_dir}); run the same '
        f'compare command again to continue (exit code {code})', code)
  results = finished_results(model_dir, config.steps) if code == 0 else None
  if results is None:
    reason = (f'exit code {code}: {_failure(log_path)}' if code else
              f'its {RESULTS_FILE} is not at step {config.steps}')
    print(f'{label} {run.name} failed ({reason}); log: {log_path}',
          flush=True)
  else:
    print(f'{label} {run.name}: done in {time.time() - start:.0f} s',
          flush=True)
  return results


def run_one(config: sweep.CompareConfig, run: sweep.Run, label: str
            ) -> Optional[RunResult]:
  """`run`'s results, trained unless it is finished; None if it failed."""
  model_dir = config.model_dir(run)
  results = finished_results(model_dir, config.steps)
  if results is not None:
    print(f'{label} {run.name}: finished at step {config.steps}, not '
          'retrained', flush=True)
  else:
    results = _train_run(config, run, label)
  if results is None:
    return None
  return RunResult(run, results, step_time_seconds(model_dir))

