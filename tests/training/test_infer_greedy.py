"""`infer`'s greedy predictions of a trained run are the full network's
teacher-forced argmax, each task with its own prompts."""

import json
from unittest import mock

import gin
import numpy as np
import pytest

from hyperprompt_jax import infer
from hyperprompt_jax import tasks
from tests import train_runs
from tests.two_task_mixture import CONTAINS_SEVEN
from tests.two_task_mixture import REVERSE
import tiny_models as tm

# Digit strings, as the synthetic tasks' inputs; one decoding batch.
INPUTS = ('47193', '5512', '808', '7', '123456', '9070', '31', '66')
STEPS = 4


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """(MODEL_DIR, Predictor) of the tiny `share` model trained a few steps on
  two tasks, one checkpoint, no evaluation."""
  tmp_path = tmp_path_factory.mktemp('greedy')
  model_dir = tmp_path / 'run'
  result = train_runs.train_in_process(
      tmp_path, model_dir, STEPS, f'--gin.CHECKPOINT_PERIOD={STEPS}',
      '--gin.train_loop.train.eval_dataset_cfg=None')
  assert result.returncode == 0, result.stderr
  yield model_dir, infer.Predictor(str(model_dir), batch_size=len(INPUTS))
  gin.clear_config()


def _decoded_tokens(predictor, task):
  """The token rows `[inputs, targets length]` that `predict` decodes (its
  text drops ids that are no bytes, which an untrained model emits)."""
  vocabulary = predictor.model.output_vocabulary
  with mock.patch.object(vocabulary, 'decode',
                         wraps=vocabulary.decode) as decode:
    predictor.predict(task, INPUTS)
  return np.array([call.args[0] for call in decode.call_args_list])


def _argmax_gap(predictor, task, task_id, tokens):
  """How far `[inputs, len]` each token's logit is below its position's
  largest, in the full network fed `tokens` shifted right, with the inputs
  encoded as the task defines them and the task id `task_id`."""
  feature = tasks.get_mixture_or_task(task).output_features['inputs']
  rows = [feature.vocabulary.encode(text) + [feature.vocabulary.eos_id]
          for text in INPUTS]
  inputs = np.zeros((len(rows), max(map(len, rows))), np.int32)
  for i, row in enumerate(rows):
    inputs[i, :len(row)] = row
  logits = np.asarray(tm.apply(predictor.model.module, predictor.params, {
      'encoder_input_tokens': inputs,
      'decoder_input_tokens': np.pad(tokens[:, :-1], ((0, 0), (1, 0))),
      'decoder_target_tokens': np.ones_like(tokens),  # every query real
      'encoder_task_ids': np.full_like(inputs, task_id),
      'decoder_task_ids': np.full_like(tokens, task_id)}))
  return np.max(logits, -1) - np.take_along_axis(logits, tokens[..., None],
                                                 -1)[..., 0]


def test_greedy_predictions_are_the_teacher_forced_argmax_of_their_task(run):
  """Up to and including EOS, each decoded token is the argmax (to 1e-4, for
  float ties) of the full pass over the decoded prefix with the task's id from
  task_ids.json; after EOS only padding. The two tasks decode the same inputs
  differently, and one task's tokens are not the other task's argmax. Catches
  a wrong task id in decoding (another task's prompts) and an off-by-one in
  the cache index."""
  model_dir, predictor = run
  task_ids = json.loads((model_dir / 'task_ids.json').read_text())
  eos = predictor.model.output_vocabulary.eos_id
  decoded = {task: _decoded_tokens(predictor, task)
             for task in (REVERSE, CONTAINS_SEVEN)}
  assert decoded[REVERSE].shape == (len(INPUTS),
                                    predictor.task_feature_lengths['targets'])
  assert not np.array_equal(decoded[REVERSE], decoded[CONTAINS_SEVEN])
  for task, other in ((REVERSE, CONTAINS_SEVEN), (CONTAINS_SEVEN, REVERSE)):
    tokens = decoded[task]
    # Positions up to and including the first EOS.
    live = np.cumsum(tokens == eos, axis=1) - (tokens == eos) == 0
    np.testing.assert_array_equal(tokens[~live], 0)
    gap = _argmax_gap(predictor, task, task_ids[task], tokens)
    assert np.all(gap[live] < 1e-4), (task, np.argwhere(live & (gap >= 1e-4)))
    assert np.any(_argmax_gap(predictor, task, task_ids[other],
                              tokens)[live] > 1e-2), task
