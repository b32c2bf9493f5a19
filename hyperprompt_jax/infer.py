r"""Predictions from a trained checkpoint, for one task of its mixture.

  python -m hyperprompt_jax.infer --checkpoint=/tmp/run \
    --task=synthetic_reverse --input=47193
  python -m hyperprompt_jax.infer --checkpoint=/tmp/run \
    --task=synthetic_reverse --input_file=inputs.jsonl --output_file=out.jsonl

`--checkpoint` is the run's MODEL_DIR: the model and its feature lengths come
from its `config.gin`, the task id from its `task_ids.json`, and only the
parameters are restored (latest step, or `--step`). Inputs are text in the
task's text-to-text format, one per line (or JSONL lines `{"inputs": ...}`);
each prediction is written as a JSONL line `{"inputs", "prediction", "task"}`.
"""

import argparse
import dataclasses
import difflib
import functools
import json
import os
import sys
from typing import Iterable, Optional, Sequence, TextIO

import gin
import jax
import numpy as np
import tensorflow as tf

from hyperprompt_jax.checkpointing import checkpoints as checkpoints_lib
from hyperprompt_jax import gin_utils
from hyperprompt_jax.sharding import mesh as mesh_lib
from hyperprompt_jax.sharding import partitioning
from hyperprompt_jax import tasks
from hyperprompt_jax.training import evaluation
from hyperprompt_jax.training import train_loop
from hyperprompt_jax.training import trainer as trainer_lib

DECODERS = ('greedy', 'sample', 'beam')


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
  """How to decode (the arguments of `EncoderDecoderModel.predict_batch`).

  Attributes:
    decoder: 'greedy', 'sample' or 'beam'.
    num_decodes: beams for 'beam'.
    temperature: sampling temperature for 'sample'.
    max_decode_length: tokens to produce at most; None: the run's targets
      length.
    seed: seeds 'sample'.
  """
  decoder: str = 'greedy'
  num_decodes: int = 4
  temperature: float = 1.0
  max_decode_length: Optional[int] = None
  seed: int = 0


def _run_file(model_dir: str, name: str) -> str:
  path = os.path.join(model_dir, name)
  if not tf.io.gfile.exists(path):
    raise checkpoints_lib.CheckpointError(
        f'no {name} in {model_dir}: pass the MODEL_DIR of a training run '
        '(it holds config.gin, task_ids.json and checkpoints/)')
  return path


class Predictor:
  """A trained model, restored for decoding text of the tasks of its run."""

  def __init__(self, model_dir: str, step: Optional[int] = None,
               batch_size: int = 8):
    """Reads the run's config and task ids and restores its parameters.

    Args:
      model_dir: the training run's MODEL_DIR.
      step: checkpoint step to restore; None for the latest.
      batch_size: rows per decoding call (a multiple of the devices; the last
        batch is padded, so one shape is compiled).
    """
    checkpointer = checkpoints_lib.Checkpointer(model_dir, read_only=True)
    self.task_ids = tasks.load_task_id_map(
        _run_file(model_dir, train_loop.TASK_IDS_FILE))
    # Everything gin configures is built while the run's config is bound;
    # the caller's config is back afterwards.
    with gin_utils.isolated_config():
      config_file = _run_file(model_dir, train_loop.CONFIG_FILE)
      with tf.io.gfile.GFile(config_file) as f:
        gin_utils.parse_run_config(f.read(), config_file)
      bindings = gin.get_bindings(train_loop.train)
      self._rules = partitioning.logical_axis_rules()
      self._converter = bindings['model'].feature_converter_cls(pack=False)
    self.model = bindings['model']
    self.task_feature_lengths = dict(
        bindings['train_dataset_cfg'].task_feature_lengths)

    self.mesh = mesh_lib.MeshConfig().make_mesh()
    data_size = self.mesh.shape['data']
    self.batch_size = -(-batch_size // data_size) * data_size
    self._batch_sharding = mesh_lib.batch_sharding(self.mesh)
    input_shapes = self._converter.batch_shapes(self.task_feature_lengths,
                                                self.batch_size)
    abstract, self._param_shardings, _ = trainer_lib.abstract_params(
        self.model, self.mesh, self._rules, input_shapes,
        jax.random.PRNGKey(0))
    self.params, self.step = checkpointer.restore_params(abstract, step)
    checkpointer.close()

  def task_id(self, task: str) -> int:
    """The id the run gave `task`; a one-line error for other names."""
    if task not in self.task_ids:
      close = difflib.get_close_matches(task, self.task_ids, n=3, cutoff=0.5)
      hint = f'close matches: {", ".join(close)}' if close else (
          f'its tasks: {", ".join(self.task_ids)}')
      raise ValueError(f'task {task!r} is not one of this run\'s tasks '
                       f'({hint}); pass --task=NAME from task_ids.json')
    return self.task_ids[task]

  def features(self, task: str, inputs: Sequence[str],
                max_decode_length: int) -> tf.data.Dataset:
    """Model features of unpacked rows, enumerated as seqio's eval caches."""
    task_id = self.task_id(task)
    feature = tasks.get_mixture_or_task(task).output_features['inputs']
    tokens = [feature.vocabulary.encode(text) + (
        [feature.vocabulary.eos_id] if feature.add_eos else [])
              for text in inputs]
    limit = self.task_feature_lengths['inputs']
    for i, row in enumerate(tokens):
      if len(row) > limit:
        raise ValueError(
            f'input {i + 1} has {len(row)} tokens but the model takes at most '
            f"{limit} (TASK_FEATURE_LENGTHS['inputs'] of the run): shorten it "
            'or train with longer inputs')
    ds = tf.data.Dataset.from_generator(
        lambda: ({'inputs': np.asarray(row, np.int32),
                  'targets': np.asarray([1], np.int32),  # unused, not empty
                  'task_id': np.int32(task_id)} for row in tokens),
        output_signature={
            'inputs': tf.TensorSpec([None], tf.int32),
            'targets': tf.TensorSpec([None], tf.int32),
            'task_id': tf.TensorSpec([], tf.int32)})
    return self._converter(ds, {'inputs': limit,
                                'targets': max_decode_length}).enumerate()

  def predict(self, task: str, inputs: Sequence[str],
              config: DecodeConfig = DecodeConfig()) -> list[str]:
    """Decoded text for each input of `task`, in order."""
    if config.decoder not in DECODERS:
      raise ValueError(f'unknown decoder {config.decoder!r}: use one of '
                       f'{", ".join(DECODERS)}')
    length = config.max_decode_length or self.task_feature_lengths['targets']
    predict = jax.jit(
        functools.partial(self.model.predict_batch, decoder=config.decoder,
                          max_decode_length=length,
                          num_decodes=config.num_decodes,
                          temperature=config.temperature),
        in_shardings=(self._param_shardings, self._batch_sharding, None),
        out_shardings=mesh_lib.replicated(self.mesh))
    vocabulary = self.model.output_vocabulary
    rng = jax.random.PRNGKey(config.seed)
    predictions = {}
    for indices, batch in evaluation.padded_batches(
        self.features(task, inputs, length), self.batch_size):
      with mesh_lib.activate(self.mesh, self._rules):
        tokens = np.asarray(predict(
            self.params,
            evaluation.host_batch_to_global(batch, self._batch_sharding),
            jax.random.fold_in(rng, int(indices[0]))))
      predictions.update({int(i): vocabulary.decode(row.tolist())
                          for i, row in zip(indices, tokens) if i >= 0})
    return [predictions[i] for i in range(len(inputs))]


def read_inputs(lines: Iterable[str], source: str = 'input') -> list[str]:
  """Inputs from text lines, each plain text or JSON `{"inputs": ...}`.

  Blank lines are skipped. Errors name `source` and the line number.
  """
  inputs = []
  for number, line in enumerate(lines, 1):
    line = line.rstrip('\n')
    if line.lstrip().startswith('{'):
      try:
        line = json.loads(line)['inputs']
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f'{source}:{number}: not JSON with an "inputs" field '
                         f'({e}): write plain text or {{"inputs": "..."}}'
                         ) from e
    if line:
      inputs.append(str(line))
  return inputs


def read_input_file(path: str) -> list[str]:
  """The inputs of `--input_file`: UTF-8 text, one input per line."""
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'no input file {path}: pass an existing '
                            '--input_file or use --input=TEXT')
  with tf.io.gfile.GFile(path, 'rb') as f:
    raw_lines = f.read().splitlines()
  lines = []
  for number, raw in enumerate(raw_lines, 1):
    try:
      lines.append(raw.decode('utf-8'))
    except UnicodeDecodeError as e:
      raise ValueError(f'{path}:{number}: not UTF-8 text ({e.reason} at byte '
                       f'{e.start}): save the file as UTF-8') from None
  inputs = read_inputs(lines, path)
  if not inputs:
    raise ValueError(f'{path} holds no inputs: write one input per line')
  return inputs


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = gin_utils.command_parser('infer', __doc__)
  parser.add_argument('--checkpoint', required=True,
                      help='MODEL_DIR of a training run')
  parser.add_argument('--step', type=int, default=None,
                      help='checkpoint step (default: the latest)')
  parser.add_argument('--task', required=True,
                      help='task name, as in the run\'s task_ids.json')
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--input', help='one input text')
  source.add_argument('--input_file',
                      help='one input per line, plain text or JSONL '
                      '{"inputs": ...}')
  parser.add_argument('--output_file', default=None,
                      help='JSONL predictions (default: stdout)')
  parser.add_argument('--decoder', choices=DECODERS, default='greedy')
  parser.add_argument('--num_decodes', type=int, default=4,
                      help='beams for --decoder=beam')
  parser.add_argument('--temperature', type=float, default=1.0,
                      help='for --decoder=sample')
  parser.add_argument('--max_decode_length', type=int, default=None,
                      help="default: the run's targets length")
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--batch_size', type=int, default=8)
  return parser.parse_args(argv)


def _write(out: TextIO, task: str, inputs: Sequence[str],
           predictions: Sequence[str]) -> None:
  for text, prediction in zip(inputs, predictions):
    out.write(json.dumps({'inputs': text, 'prediction': prediction,
                          'task': task}) + '\n')


def main(argv: Sequence[str]) -> None:
  args = parse_args(argv)
  if args.input is not None:
    inputs = [args.input]
  else:
    inputs = read_input_file(args.input_file)
  predictor = Predictor(args.checkpoint, args.step, args.batch_size)
  predictor.task_id(args.task)  # fail on a bad name before decoding
  predictions = predictor.predict(args.task, inputs, DecodeConfig(
      args.decoder, args.num_decodes, args.temperature,
      args.max_decode_length, args.seed))
  if args.output_file:
    with tf.io.gfile.GFile(args.output_file, 'w') as f:
      _write(f, args.task, inputs, predictions)
  else:
    _write(sys.stdout, args.task, inputs, predictions)


if __name__ == '__main__':
  gin_utils.run_main(main)
