"""Bad input ends with one line that names the problem and the fix; errors
from inside JAX keep their traceback."""

import shutil
import types

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from hyperprompt_jax.checkpointing import iterator_checkpoint
from hyperprompt_jax.data import pipeline
from hyperprompt_jax import gin_utils
from hyperprompt_jax import infer
from hyperprompt_jax.layers import masks
from hyperprompt_jax.training import train_loop
from tests import train_runs
from tests import two_task_mixture


@pytest.fixture
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_misspelled_macro_names_close_matches(clean_gin):
  del clean_gin
  with pytest.raises(gin_utils.GinConfigError,
                     match=r'--gin.LEARNIN_RATE sets a macro that no gin file '
                     r'reads \(close matches: LEARNING_RATE\)'):
    gin_utils.parse_gin(['runs/synthetic_global_tiny.gin'],
                        ["MODEL_DIR = '/tmp/unused'", 'LEARNIN_RATE = 1'])


def test_macros_and_parameters_that_are_read_pass(clean_gin):
  del clean_gin
  gin_utils.parse_gin(['runs/synthetic_global_tiny.gin'],
                      ["MODEL_DIR = '/tmp/unused'", 'LEARNING_RATE = 1',
                       'PROMPT_LENGTH = 4', 'trainer.TrainerConfig.seed = 3'])
  assert gin.query_parameter('%LEARNING_RATE') == 1


def test_misspelled_macro_on_the_command_line_is_one_line(tmp_path):
  model_dir = tmp_path / 'run'
  result = train_runs.train_in_process(tmp_path, model_dir, 1,
                                       '--gin.LEARNIN_RATE=1')
  assert train_runs.error_line(result).startswith(
      'error: --gin.LEARNIN_RATE sets a macro that no gin file reads '
      '(close matches: LEARNING_RATE')
  assert not model_dir.exists()  # Refused before anything was written.


def test_batch_size_must_split_over_the_data_axis():
  mesh = types.SimpleNamespace(shape={'data': 4, 'model': 2})
  train_loop._check_batch_size(8, mesh)  # pylint: disable=protected-access
  with pytest.raises(ValueError, match=r"BATCH_SIZE=6 is not divisible by the "
                     r"4 devices of the mesh's data axis .*use a multiple of 4"):
    train_loop._check_batch_size(6, mesh)  # pylint: disable=protected-access


def test_unwritable_model_dir(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  with pytest.raises(ValueError, match=rf'MODEL_DIR {blocker}/run is not '
                     'writable .*: choose a directory you can write to'):
    train_loop._make_model_dir(str(blocker / 'run'))  # pylint: disable=protected-access
  train_loop._make_model_dir(str(tmp_path / 'ok'))  # pylint: disable=protected-access
  assert list((tmp_path / 'ok').iterdir()) == []  # The probe is removed.


@pytest.mark.parametrize('bad', [-1, 3])
def test_task_ids_outside_the_range_are_refused_on_the_host(bad):
  batch = {'encoder_task_ids': np.array([[0, 2, 0]]),
           'decoder_task_ids': np.array([[1, bad]])}
  with pytest.raises(ValueError, match=rf'decoder_task_ids holds task id '
                     rf'{bad}, outside \[0, 3\) of NUM_TASKS=3'):
    pipeline.check_task_ids(batch, num_tasks=3)


def test_packed_rows_of_several_tasks_are_refused_when_routed_by_row():
  batch = {'encoder_task_ids': np.array([[1, 1, 0], [2, 0, 0]]),
           'encoder_segment_ids': np.array([[1, 1, 0], [1, 2, 0]])}
  # Row 0's padding (segment 0) has id 0: not a second task.
  pipeline.check_task_ids(batch, 3, one_task_per_row=False)
  with pytest.raises(ValueError, match=r'Packed row 1 of the batch holds '
                     r'examples of several tasks \(encoder_task_ids\).*'
                     'ONE_TASK_PER_ROW = False'):
    pipeline.check_task_ids(batch, 3, one_task_per_row=True)
  batch['encoder_task_ids'][1, 1] = 2
  pipeline.check_task_ids(batch, 3, one_task_per_row=True)


def test_task_ids_in_range_pass():
  pipeline.check_task_ids({'encoder_task_ids': np.array([[0, 2]]),
                       'decoder_task_ids': np.zeros((1, 0), np.int32)}, 3)


def test_input_file_not_utf8_names_file_and_line(tmp_path):
  path = tmp_path / 'inputs.txt'
  path.write_bytes(b'123\n\xff\xfe45\n')
  with pytest.raises(ValueError, match=rf'{path}:2: not UTF-8 text'):
    infer.read_input_file(str(path))


def test_empty_input_file_is_refused(tmp_path):
  path = tmp_path / 'inputs.txt'
  path.write_text('\n\n')
  with pytest.raises(ValueError, match=rf'{path} holds no inputs'):
    infer.read_input_file(str(path))


def test_input_file_lines(tmp_path):
  path = tmp_path / 'inputs.txt'
  path.write_text('47193\n{"inputs": "5512"}\n\nÄ808\n')
  assert infer.read_input_file(str(path)) == ['47193', '5512', 'Ä808']


def test_own_errors_are_one_line_and_library_errors_keep_traceback():
  def own(argv):
    del argv
    pipeline.check_task_ids({'encoder_task_ids': np.array([[5]])}, 3)

  with pytest.raises(SystemExit, match='^error: encoder_task_ids holds task '
                     'id 5'):
    gin_utils.run_main(own)

  def library(argv):
    del argv
    # A ValueError raised inside jax.numpy, under jit, from this test's code.
    jax.jit(lambda x: jnp.split(x, 4, axis=1))(np.ones((2, 3)))

  with pytest.raises(ValueError, match='array split does not result in an '
                     'equal division'):
    gin_utils.run_main(library)


def test_errors_from_inside_jax_called_by_project_code_are_not_its_own():
  with pytest.raises(Exception) as shape_error:
    jax.jit(masks.combine_masks)(np.ones((2, 3), bool), np.ones((4, 5), bool))
  assert not gin_utils._raised_by_own_code(shape_error.value)  # pylint: disable=protected-access
  with pytest.raises(ValueError) as own:
    pipeline.check_task_ids({'encoder_task_ids': np.array([[5]])}, 3)
  assert gin_utils._raised_by_own_code(own.value)  # pylint: disable=protected-access


def test_a_pipeline_checkpoints_cannot_save_is_refused_before_training():
  generated = tf.data.Dataset.from_generator(
      lambda: iter(range(3)), output_signature=tf.TensorSpec([], tf.int64))
  with pytest.raises(ValueError, match='checkpoints cannot save the training '
                     'data pipeline .*not Python generators'):
    iterator_checkpoint.check_saveable(iter(generated))
  iterator_checkpoint.check_saveable(iter(tf.data.Dataset.range(3)))


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
  """A MODEL_DIR trained 2 steps (checkpoint at 2)."""
  tmp_path = tmp_path_factory.mktemp('damaged')
  model_dir = tmp_path / 'run'
  result = train_runs.train_in_process(
      tmp_path, model_dir, 2, '--gin.train_loop.train.eval_dataset_cfg=None')
  assert result.returncode == 0, result.stderr
  return tmp_path, model_dir


def _damaged_copy(trained_run, tmp_path, name, text):
  """A copy of the trained run with file `name` replaced by `text`."""
  model_dir = tmp_path / 'run'
  shutil.copytree(trained_run[1], model_dir)
  (model_dir / name).write_text(text)
  return model_dir


@pytest.mark.parametrize('text', ['{"synthetic_pair_synth', '[0, 1]',
                                  '{"a": 0, "b": 5}'])
def test_damaged_task_ids_file_is_one_line_in_train_and_infer(
    trained_run, tmp_path, text):
  """A truncated or rewritten task_ids.json: train and infer each end with
  one line naming the file and the fix; the checkpoint stays. Catches a raw
  JSONDecodeError traceback and ids silently shifted."""
  model_dir = _damaged_copy(trained_run, tmp_path, 'task_ids.json', text)
  expected = (f'error: {model_dir}/task_ids.json is damaged (')
  fix = ('): restore it from a copy (an exported model holds one), or delete '
         "it and run train again, which rewrites it from the run's mixture")
  trained = train_runs.train_in_process(trained_run[0], model_dir, 4)
  line = trained.stderr.strip()
  assert line.startswith(expected) and line.endswith(fix), line
  inferred = train_runs.infer(
      tmp_path, f'--checkpoint={model_dir}',
      f'--task={two_task_mixture.REVERSE}', '--input=123')
  line = train_runs.error_line(inferred)
  assert line.startswith(expected) and line.endswith(fix), line
  assert train_runs.steps(model_dir) == [2]


@pytest.mark.parametrize('keep_lines', [0, 5])
def test_damaged_run_config_is_one_line_in_infer(trained_run, tmp_path,
                                                 keep_lines):
  """config.gin cut after `keep_lines` lines (a truncated write): infer says
  in one line which file and how to get it back. Catches a KeyError
  traceback from a config that parses but binds no model."""
  text = (trained_run[1] / 'config.gin').read_text()
  model_dir = _damaged_copy(trained_run, tmp_path, 'config.gin', ''.join(
      text.splitlines(keepends=True)[:keep_lines]))
  result = train_runs.infer(
      tmp_path, f'--checkpoint={model_dir}',
      f'--task={two_task_mixture.REVERSE}', '--input=123')
  line = train_runs.error_line(result)
  assert line.startswith(
      f'error: unreadable run config {model_dir}/config.gin ('), line
  assert line.endswith(
      "its config.gin is damaged: restore it from a copy, or run train once "
      "more with the run's gin files (it rewrites config.gin at the start)")
