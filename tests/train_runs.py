"""Tiny end-to-end runs of `python -m hyperprompt_jax.train` / `.infer`, in
subprocesses or in the test's own process, and damaged checkpoints, shared by
the end-to-end tests."""

import contextlib
import io
import socket
import subprocess
import sys
from unittest import mock

import gin
import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf

from hyperprompt_jax.data import pipeline as data_lib
from hyperprompt_jax import gin_utils
from hyperprompt_jax import train as train_main
from tests import two_task_mixture

_MODEL_GIN = """
from __gin__ import dynamic_registration
from hyperprompt_jax.conditioning import hyperprompt_config
from hyperprompt_jax.model import network
network.Transformer.config = @network.T5Config()
network.Transformer.hyperprompt = @hyperprompt_config.HyperPromptConfig()
network.T5Config.emb_dim = 16
network.T5Config.num_heads = 2
network.T5Config.num_encoder_layers = 1
network.T5Config.num_decoder_layers = 1
network.T5Config.head_dim = 8
network.T5Config.mlp_dim = 32
network.T5Config.mlp_activations = ('gelu', 'linear')
network.T5Config.dropout_rate = 0.0
hyperprompt_config.HyperPromptConfig.variant = 'share'
hyperprompt_config.HyperPromptConfig.num_tasks = %NUM_TASKS
hyperprompt_config.HyperPromptConfig.prompt_length = 2
hyperprompt_config.HyperPromptConfig.bottleneck_dim = 4
"""

# Two tasks instead of the synthetic mixture's six: half the input pipelines
# to build and evaluate per run (see two_task_mixture.py).
_MIXTURE_GIN = f"""
from __gin__ import dynamic_registration
from tests import two_task_mixture
MIXTURE_OR_TASK_NAME = '{two_task_mixture.NAME}'
"""


def error_line(result):
  """The single `error: ...` line of a failed run (TF may log after it)."""
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  errors = [l for l in result.stderr.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1, result.stderr[-3000:]
  return errors[0]


def train_command(tmp_path, model_dir, num_steps, *extra) -> list[str]:
  """The command line of a tiny run (model above) on two synthetic tasks."""
  gin_dir = tmp_path / 'gin'
  (gin_dir / 'models').mkdir(parents=True, exist_ok=True)
  (gin_dir / 'models' / 't5_1_1_tiny.gin').write_text(_MODEL_GIN)
  (gin_dir / 'two_task_mixture.gin').write_text(_MIXTURE_GIN)
  return [sys.executable, '-m', 'hyperprompt_jax.train',
          f'--gin_search_paths={gin_dir}',
          '--gin_file=runs/synthetic_tiny_base.gin',
          '--gin_file=two_task_mixture.gin',
          f"--gin.MODEL_DIR='{model_dir}'", f'--gin.TRAIN_STEPS={num_steps}',
          '--gin.BATCH_SIZE=4', '--gin.CHECKPOINT_PERIOD=2',
          '--gin.KEEP_CHECKPOINTS=2', '--gin.LOG_PERIOD=1',
          '--gin.EVAL_NUM_EXAMPLES=2', *extra]


def train(tmp_path, model_dir, num_steps, *extra):
  """Runs `train_command` in a new process; returns the CompletedProcess."""
  return subprocess.run(train_command(tmp_path, model_dir, num_steps, *extra),
                        capture_output=True, text=True)


def train_in_process(tmp_path, model_dir, num_steps, *extra):
  """`train` in this process (see `run_train_main`)."""
  return run_train_main(
      train_command(tmp_path, model_dir, num_steps, *extra)[3:])


def run_train_main(args):
  """Runs `python -m hyperprompt_jax.train ARGS`' entry point in this process,
  which keeps compiled programs and traced input pipelines from run to run
  (see `run_in_process`)."""
  return run_in_process(train_main.main, args)


def run_in_process(main, args):
  """Runs a command's `main` as `gin_utils.run_main` would, in this process.

  Returns a CompletedProcess: the command's stdout, and as stderr the
  `error: ...` line a failed command prints (other output is not captured).
  """
  stdout = io.StringIO()
  gin.clear_config()
  try:
    # --verbose: leave this process's log and warning settings alone.
    with mock.patch.object(sys, 'argv', ['command', '--verbose', *args]):
      with contextlib.redirect_stdout(stdout):
        gin_utils.run_main(main)
    code, stderr = 0, ''
  except SystemExit as e:
    code, stderr = ((1, f'{e.code}\n') if isinstance(e.code, str)
                    else (e.code, ''))
  finally:
    gin.clear_config()
  return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr)


def infer(tmp_path, *args):
  """Runs `python -m hyperprompt_jax.infer`; returns the CompletedProcess."""
  return subprocess.run([sys.executable, '-m', 'hyperprompt_jax.infer', *args],
                        capture_output=True, text=True)


_get_dataset = data_lib.get_dataset


def free_port() -> int:
  """A local TCP port for a multi-process run's coordinator."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def batches_of_processes(num_processes, cfg, feature_converter_cls,
                         num_epochs=None):
  """What each process of `num_processes` reads (`pipeline.get_dataset` as
  each), side by side along the batch: their run's global batches, for a
  one-process run to read."""
  parts = []
  for index in range(num_processes):
    with mock.patch.object(jax, 'process_index', return_value=index), \
         mock.patch.object(jax, 'process_count', return_value=num_processes):
      parts.append(_get_dataset(cfg, feature_converter_cls, num_epochs))
  return tf.data.Dataset.zip(tuple(parts)).map(
      lambda *rows: {k: tf.concat([r[k] for r in rows], 0) for k in rows[0]})


def steps(model_dir):
  """The steps saved under MODEL_DIR/checkpoints."""
  return sorted(int(p.name) for p in (model_dir / 'checkpoints').iterdir()
                if p.name.isdigit())


def saved_state(model_dir, step):
  """Checkpoint `step`'s TrainState as {key path: numpy array} (read with
  orbax, whatever devices saved it)."""
  path = model_dir / 'checkpoints' / str(step) / 'state'
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                          ocp.StandardCheckpointHandler().metadata(path))
  tree = ocp.PyTreeCheckpointer().restore(path, restore_args=as_numpy)
  return {jax.tree_util.keystr(p): np.asarray(leaf)
          for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def assert_states_equal(got, want, atol_fraction=None):
  """Every array of `want` (a `saved_state`) is in `got`, bit-identical, or
  with `atol_fraction` within that fraction of its largest magnitude."""
  assert got.keys() == want.keys() and len(got) > 3
  for path, value in want.items():
    if atol_fraction is None:
      np.testing.assert_array_equal(got[path], value, err_msg=path)
    else:
      np.testing.assert_allclose(got[path], value, rtol=0,
                                 atol=atol_fraction * np.abs(value).max(),
                                 err_msg=path)


def scalars(directory, prefixes):
  """{tag: {step: value}} of the TensorBoard scalars under `directory` whose
  tags start with one of `prefixes`."""
  found = {}
  for path in directory.glob('*tfevents*'):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.tag.startswith(prefixes):
          found.setdefault(value.tag, {})[event.step] = float(
              tf.make_ndarray(value.tensor))
  return found


def damage(model_dir, step, item='state'):
  """Overwrites every file of checkpoint `step`'s `item` with garbage."""
  for path in (model_dir / 'checkpoints' / str(step) / item).rglob('*'):
    if path.is_file():
      path.write_bytes(b'not a checkpoint')
