"""Task ids, their maps, and name lookup."""

import functools

import pytest
import seqio

import hyperprompt_jax.tasks as hp_tasks
from hyperprompt_jax.tasks import task_ids


def test_mixture_maps_are_ordered_and_dense():
  for mixture, first, last in [
      ('synthetic_mixture', 'synthetic_reverse', 'synthetic_contains_seven'),
      ('glue_mixture', 'glue_cola_v2', 'glue_wnli_v2'),
      ('super_glue_mixture', 'super_glue_boolq_v102', 'super_glue_wsc_v102')]:
    mapping = hp_tasks.task_id_map(mixture)
    assert list(mapping.values()) == list(range(len(mapping)))
    assert list(mapping)[0] == first and list(mapping)[-1] == last
    assert hp_tasks.num_tasks(mixture) == len(mapping)
  assert hp_tasks.num_tasks('glue_mixture') == 9
  assert hp_tasks.num_tasks('super_glue_mixture') == 8


def test_task_alone_uses_its_mixture_map():
  mapping = hp_tasks.task_id_map('glue_rte_v2')
  assert mapping == hp_tasks.task_id_map('glue_mixture')
  assert mapping['glue_rte_v2'] == 7
  assert hp_tasks.num_tasks('glue_rte_v2') == 9


def test_examples_carry_their_baked_id():
  task = seqio.get_mixture_or_task('synthetic_digit_sum')
  ds = task.get_dataset({'inputs': 16, 'targets': 16}, split='validation',
                        shuffle=False)
  ids = {int(ex['task_id']) for ex in ds.take(5).as_numpy_iterator()}
  assert ids == {hp_tasks.task_id_map('synthetic_mixture')[task.name]}


def test_save_and_load_round_trip(tmp_path):
  path = str(tmp_path / 'model' / 'task_ids.json')
  mapping = hp_tasks.task_id_map('super_glue_mixture')
  hp_tasks.save_task_id_map(path, mapping)
  loaded = hp_tasks.load_task_id_map(path)
  assert loaded == mapping and list(loaded) == list(mapping)


def test_task_without_id_preprocessor_is_reported():
  name = 'test_tasks_ids_no_id'
  seqio.TaskRegistry.add(
      name, source=seqio.FunctionDataSource(lambda split, shuffle_files: None,
                                            splits=['train']),
      preprocessors=[], output_features={})
  try:
    with pytest.raises(ValueError, match='add_task_id'):
      hp_tasks.task_id_map(name)
  finally:
    seqio.TaskRegistry.remove(name)


def test_standalone_task_map():
  name = 'test_tasks_ids_standalone'
  seqio.TaskRegistry.add(
      name, source=seqio.FunctionDataSource(lambda split, shuffle_files: None,
                                            splits=['train']),
      preprocessors=[functools.partial(task_ids.add_task_id, task_id=3)],
      output_features={})
  try:
    assert hp_tasks.task_id_map(name) == {name: 3}
    assert hp_tasks.num_tasks(name) == 4
  finally:
    seqio.TaskRegistry.remove(name)


@pytest.mark.parametrize('name', ['glue_mixtur', 'synthetic_revrse'])
def test_unknown_name_lists_close_matches(name):
  with pytest.raises(ValueError) as error:
    hp_tasks.get_mixture_or_task(name)
  message = str(error.value)
  assert f"'{name}'" in message and '\n' not in message
  expected = {'glue_mixtur': 'glue_mixture',
              'synthetic_revrse': 'synthetic_reverse'}[name]
  assert expected in message.split('close matches:')[1]


def test_unknown_name_without_close_matches():
  with pytest.raises(ValueError, match='no close matches'):
    hp_tasks.task_id_map('qqqqqqqqqqqqqqqqqqqqq')
