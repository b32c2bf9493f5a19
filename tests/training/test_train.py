"""End to end: train, checkpoint, resume, eval, infer; NaN and corrupt runs.

One tiny run (module fixture) is trained to step 4, resumed to step 6, and
then read by the inference tests; the failure tests work on copies of it.
"""

import json
import re
import shutil

import gin
import pytest

from hyperprompt_jax.checkpointing import checkpoints
from hyperprompt_jax import infer
from hyperprompt_jax.sharding import partitioning
from tests import train_runs
from tests.two_task_mixture import CONTAINS_SEVEN
from tests.two_task_mixture import REVERSE
from tests.train_runs import error_line as _error_line
from tests.train_runs import infer as _infer
from tests.train_runs import steps as _steps
from tests.train_runs import train as _train
from tests.train_runs import train_in_process as _train_here

@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A run trained to step 4 in this process, then resumed to step 6 by the
  command in a new process: (tmp, model_dir, the second's CompletedProcess)."""
  tmp_path = tmp_path_factory.mktemp('e2e')
  model_dir = tmp_path / 'run'
  first = _train_here(tmp_path, model_dir, 4)
  assert first.returncode == 0, first.stderr[-3000:]
  assert _steps(model_dir) == [2, 4]
  second = _train(tmp_path, model_dir, 6)
  assert second.returncode == 0, second.stderr[-3000:]
  return tmp_path, model_dir, second


def test_train_checkpoint_resume_eval(run):
  _, model_dir, second = run
  assert _steps(model_dir) == [4, 6]  # keep the last 2
  assert (model_dir / 'task_ids.json').exists()
  assert (model_dir / 'config.gin').exists()
  assert 'Resumed from step 4' in second.stdout
  assert '[train step 5]' in second.stdout
  assert '[train step 1]' not in second.stdout
  results = json.loads((model_dir / 'eval_results.json').read_text())
  assert results['step'] == 6
  assert sorted(results['results']) == sorted([REVERSE, CONTAINS_SEVEN])
  for metrics in results['results'].values():
    assert 'loss' in metrics and 'token_accuracy' in metrics
  assert REVERSE in second.stdout  # the printed table
  assert second.stderr == ''  # No TensorFlow, absl or CUDA noise.


def test_infer_cli_predicts_for_the_named_task(run):
  tmp_path, model_dir, _ = run
  inputs = tmp_path / 'inputs.txt'
  inputs.write_text('47193\n{"inputs": "5512"}\n\n808\n')
  out = tmp_path / 'predictions.jsonl'
  result = _infer(tmp_path, f'--checkpoint={model_dir}',
                  f'--task={CONTAINS_SEVEN}', f'--input_file={inputs}',
                  f'--output_file={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r['inputs'] for r in rows] == ['47193', '5512', '808']
  assert result.stderr == ''
  verbose = _infer(tmp_path, '--verbose', f'--checkpoint={model_dir}',
                   f'--task={CONTAINS_SEVEN}', '--input=5')
  assert verbose.returncode == 0, verbose.stderr[-3000:]
  assert 'prediction' in verbose.stdout and verbose.stderr  # Logs shown.
  assert {r['task'] for r in rows} == {CONTAINS_SEVEN}
  assert all(isinstance(r['prediction'], str) for r in rows)


@pytest.fixture(scope='module')
def predictor(run):
  return infer.Predictor(str(run[1]), batch_size=2)


def test_predictor_restores_the_latest_params_and_uses_saved_task_ids(
    run, predictor, tmp_path):
  _, model_dir, _ = run
  assert predictor.step == 6
  saved = json.loads((model_dir / 'task_ids.json').read_text())
  assert predictor.task_ids == saved
  _, features = next(
      predictor.features(CONTAINS_SEVEN, ['12'], 4).as_numpy_iterator())
  assert features['task_ids'] == saved[CONTAINS_SEVEN]
  # A registered task that the run's map lacks is refused: the map decides.
  copy = tmp_path / 'copy'
  shutil.copytree(model_dir, copy)
  del saved[CONTAINS_SEVEN]
  (copy / 'task_ids.json').write_text(json.dumps(saved))
  with pytest.raises(ValueError, match=f"'{CONTAINS_SEVEN}' is not one"):
    infer.Predictor(str(copy), step=4).task_id(CONTAINS_SEVEN)


def test_predictor_gives_the_caller_its_gin_config_back(run):
  """The run's config.gin is read on its own: the caller's bindings are
  there afterwards, the run's are not, and the run's (not the caller's)
  partitioning rules shard the restored params."""
  dims = ('hyperprompt_jax.sharding.partitioning.logical_axis_rules.'
          'parameter_partitioning_dims')
  gin.clear_config()
  gin.parse_config(f'{dims} = 2')
  try:
    predictor = infer.Predictor(str(run[1]), batch_size=2)
    assert gin.query_parameter(dims) == 2
    with pytest.raises(ValueError):  # The run's macros are gone.
      gin.query_parameter('%MODEL_DIR')
    assert predictor._rules == partitioning.logical_axis_rules(  # pylint: disable=protected-access
        parameter_partitioning_dims=1)
    assert predictor._rules != partitioning.logical_axis_rules()  # pylint: disable=protected-access
  finally:
    gin.clear_config()


def test_predictor_decoders_return_one_prediction_per_input(predictor):
  inputs = ['123', '4567', '89']  # 3 rows: the last batch is padded
  greedy = predictor.predict(REVERSE, inputs)
  assert len(greedy) == 3 and all(isinstance(p, str) for p in greedy)
  assert greedy == predictor.predict(REVERSE, inputs)
  beam = predictor.predict(REVERSE, inputs,
                           infer.DecodeConfig('beam', num_decodes=2,
                                              max_decode_length=4))
  assert len(beam) == 3 and all(len(p.encode()) <= 4 for p in beam)


@pytest.mark.parametrize('task, inputs, message', [
    (REVERSE[:-1], ['1'], f'close matches: {REVERSE}'),
    (REVERSE, ['1' * 200], r'201 tokens but the model takes at '
     r"most 32 \(TASK_FEATURE_LENGTHS\['inputs'\]"),
])
def test_predictor_bad_input_is_a_one_line_error(predictor, task, inputs,
                                                 message):
  with pytest.raises(ValueError, match=message) as error:
    predictor.predict(task, inputs)
  assert '\n' not in str(error.value)


def test_infer_without_a_run_is_a_one_line_error(tmp_path):
  with pytest.raises(checkpoints.CheckpointError, match='no checkpoints in'):
    infer.Predictor(str(tmp_path / 'missing'))


def test_infer_from_a_corrupt_checkpoint_is_a_one_line_error(run, tmp_path):
  _, model_dir, _ = run
  copy = tmp_path / 'corrupt'
  shutil.copytree(model_dir, copy)
  train_runs.damage(copy, 6)
  result = train_runs.run_in_process(
      infer.main, [f'--checkpoint={copy}', f'--task={REVERSE}', '--input=123'])
  assert _error_line(result).startswith(
      f'error: checkpoint {copy}/checkpoints/6 is unreadable')


def test_unreadable_latest_checkpoint_is_moved_aside_and_the_previous_resumes(
    run, tmp_path):
  _, model_dir, _ = run
  copy = tmp_path / 'damaged'
  shutil.copytree(model_dir, copy)
  train_runs.damage(copy, 6)
  result = _train_here(tmp_path, copy, 8)
  assert result.returncode == 0, result.stderr[-3000:]
  notes = [l for l in result.stdout.splitlines() if l.startswith('checkpoint ')]
  assert len(notes) == 1, result.stdout
  assert re.fullmatch(
      rf'checkpoint {copy}/checkpoints/6 is unreadable \(.+\): moved it to '
      rf'{copy}/checkpoints_unreadable/6; trying the previous checkpoint',
      notes[0]), notes[0]
  assert 'Resumed from step 4' in result.stdout
  assert (copy / 'checkpoints_unreadable' / '6' / 'state').is_dir()
  assert _steps(copy) == [6, 8]


def test_checkpoint_of_another_model_names_the_first_mismatch(run, tmp_path):
  _, model_dir, _ = run
  copy = tmp_path / 'other_model'
  shutil.copytree(model_dir, copy)
  result = _train_here(tmp_path, copy, 8,
                  "--gin.hyperprompt_config.HyperPromptConfig.variant='sep'")
  line = _error_line(result)
  assert re.match(
      rf'error: checkpoint {copy}/checkpoints/6 was saved by another model: '
      r'\S+/hyperprompt/\S+ (has shape \(.*\) in the checkpoint, \(.*\) in '
      r'the model|\(shape .*\) is (missing from|in) the checkpoint)', line), line
  assert 'delete' not in line
  assert _steps(copy) == [4, 6]  # Nothing moved or written.
  assert not (copy / 'checkpoints_unreadable').exists()


def test_nan_loss_stops_before_saving_and_keeps_the_last_checkpoint(
    run, tmp_path):
  _, model_dir, _ = run
  copy = tmp_path / 'nan'
  shutil.copytree(model_dir, copy)
  # A huge learning rate turns the weights into overflowing values at step 7,
  # so the loss of step 8 is not finite; step 8 would be saved.
  result = _train_here(tmp_path, copy, 8, '--gin.LEARNING_RATE=1e30')
  assert re.match(r'error: loss is (nan|inf) by step [78]; stopped without '
                  r'saving \(last checkpoint: step 6\)', _error_line(result))
  assert _steps(copy) == [4, 6]
  assert infer.Predictor(str(copy)).step == 6  # still restores


def test_bad_gin_binding_is_one_line_error(tmp_path):
  out = _train_here(tmp_path, tmp_path / 'bad', 1, '--gin.NO_EQUALS_SIGN')
  assert _error_line(out).startswith('error: bad gin flag')
