"""The built-in synthetic mixture: determinism, conflicts, sizes, rates."""

import pathlib

import gin
import pytest
import seqio

import hyperprompt_jax.tasks as hp_tasks
from hyperprompt_jax.tasks import synthetic
from hyperprompt_jax.tasks import vocabularies

LENGTHS = {'inputs': 16, 'targets': 16}


def _texts(task_name, split='validation'):
  ds = seqio.get_mixture_or_task(task_name).get_dataset(
      LENGTHS, split=split, shuffle=False)
  return [(ex['inputs_pretokenized'].decode(),
           ex['targets_pretokenized'].decode())
          for ex in ds.as_numpy_iterator()]


@pytest.fixture
def gin_scope():
  yield
  gin.clear_config()


def test_identical_for_a_fixed_seed_and_different_for_another(gin_scope):
  del gin_scope
  first, again = _texts('synthetic_reverse'), _texts('synthetic_reverse')
  assert first == again
  gin.bind_parameter('hyperprompt_jax.tasks.synthetic_data_seed.seed', 1)
  assert _texts('synthetic_reverse') != first


def test_targets_follow_each_task_rule():
  for inputs, target in _texts('synthetic_reverse'):
    assert target == inputs[::-1]
  for inputs, target in _texts('synthetic_digit_sum'):
    assert int(target) == sum(int(d) for d in inputs)
  for inputs, target in _texts('synthetic_contains_seven'):
    assert target == ('yes' if '7' in inputs else 'no')


def test_tasks_conflict_on_the_same_inputs():
  """Every input of the smallest task has a different target in each task."""
  per_task = {name: dict(synthetic.examples(name, 'train', seed=0))
              for name in synthetic.SYNTHETIC_TASKS}
  shared = set(per_task['contains_seven'])
  for examples in per_task.values():
    assert shared <= set(examples)
  targets_per_input = [{examples[x] for examples in per_task.values()}
                       for x in shared]
  # Six tasks, at least 4 distinct answers for every shared input.
  assert min(len(targets) for targets in targets_per_input) >= 4


def test_sizes_and_splits_are_disjoint():
  for name, task in synthetic.SYNTHETIC_TASKS.items():
    assert len(synthetic.examples(name, 'train', seed=0)) == task.train_size
  sizes = [t.train_size for t in synthetic.SYNTHETIC_TASKS.values()]
  assert max(sizes) >= 50 * min(sizes)
  train = set(synthetic.input_pool('train', 0))
  validation = set(synthetic.input_pool('validation', 0))
  test = set(synthetic.input_pool('test', 0))
  assert not train & validation and not train & test and not validation & test
  assert len(_texts('synthetic_first_gt_last')) == synthetic.EVAL_SIZE


def test_inputs_have_no_task_prefix():
  """Only the task id can tell the tasks apart."""
  for name in synthetic.SYNTHETIC_TASKS:
    inputs = [x for x, _ in _texts(synthetic.task_name(name))]
    assert all(x.isdigit() for x in inputs)


def test_mixing_rates_follow_gin(gin_scope):
  del gin_scope
  mixture = seqio.get_mixture_or_task('synthetic_mixture')
  reverse = seqio.get_mixture_or_task('synthetic_reverse')
  seven = seqio.get_mixture_or_task('synthetic_contains_seven')
  ratio = mixture.get_rate(reverse) / mixture.get_rate(seven)
  assert ratio == pytest.approx(100)
  gin.bind_parameter('hyperprompt_jax.tasks.mixing_rate.temperature', 2.0)
  ratio = mixture.get_rate(reverse) / mixture.get_rate(seven)
  assert ratio == pytest.approx(10)
  gin.bind_parameter('hyperprompt_jax.tasks.mixing_rate.temperature', 1.0)
  gin.bind_parameter('hyperprompt_jax.tasks.mixing_rate.maximum', 1000)
  assert mixture.get_rate(reverse) == pytest.approx(1000)


@pytest.mark.parametrize('prefixed', [False, True])
def test_perfect_and_wrong_predictions_score(prefixed):
  for name, task in synthetic.SYNTHETIC_TASKS.items():
    registered = seqio.get_mixture_or_task(synthetic.task_name(name, prefixed))
    targets = [registered.postprocess_fn(t, is_target=True)
               for _, t in _texts(registered.name)]
    wrong = [registered.postprocess_fn('?') for _ in targets]
    for metric_fn in task.metric_fns:
      assert all(v == pytest.approx(100) for v in
                 metric_fn(targets, targets).values()), name
      assert all(v == pytest.approx(0) for v in
                 metric_fn(targets, wrong).values()), name


def test_vocabulary_is_bytes():
  task = seqio.get_mixture_or_task('synthetic_reverse')
  assert isinstance(task.output_features['targets'].vocabulary,
                    seqio.ByteVocabulary)


def test_benchmark_vocabulary_follows_gin_bound_after_import(gin_scope):
  del gin_scope
  gin.bind_parameter('hyperprompt_jax.tasks.get_vocabulary.kind', 'byte')
  deferred = vocabularies.DeferredVocabulary()
  assert deferred.encode('ab') == seqio.ByteVocabulary().encode('ab')
  assert deferred.vocab_size == seqio.ByteVocabulary().vocab_size
  gin.bind_parameter('hyperprompt_jax.tasks.get_vocabulary.kind', 'words')
  with pytest.raises(ValueError, match="Unknown vocabulary kind 'words'"):
    hp_tasks.get_vocabulary()


def test_prefixed_tasks_put_the_task_name_before_the_same_examples():
  for name in synthetic.SYNTHETIC_TASKS:
    plain = _texts(synthetic.task_name(name))
    prefixed = _texts(synthetic.task_name(name, prefixed=True))
    assert prefixed == [(f'{name}: {x}', y) for x, y in plain]


def test_prefixed_mixture_keeps_ids_sizes_and_metrics(gin_scope):
  del gin_scope
  plain = hp_tasks.task_id_map(synthetic.MIXTURE_NAME)
  prefixed = hp_tasks.task_id_map(synthetic.PREFIXED_MIXTURE_NAME)
  assert list(prefixed) == [synthetic.task_name(n, prefixed=True)
                            for n in synthetic.SYNTHETIC_TASKS]
  assert list(prefixed.values()) == list(plain.values())
  for name in synthetic.SYNTHETIC_TASKS:
    a = seqio.get_mixture_or_task(synthetic.task_name(name))
    b = seqio.get_mixture_or_task(synthetic.task_name(name, prefixed=True))
    assert b.metric_fns == a.metric_fns
    for split in synthetic.SPLITS:
      assert b.num_input_examples(split) == a.num_input_examples(split)
  gin.bind_parameter('hyperprompt_jax.tasks.mixing_rate.temperature', 2.0)
  mixture = seqio.get_mixture_or_task(synthetic.PREFIXED_MIXTURE_NAME)
  reverse = seqio.get_mixture_or_task('synthetic_prefixed_reverse')
  seven = seqio.get_mixture_or_task('synthetic_prefixed_contains_seven')
  assert mixture.get_rate(reverse) / mixture.get_rate(seven) == pytest.approx(
      10)


def test_longest_prefixed_input_fits_the_synthetic_runs(gin_scope):
  """No prefixed input is truncated at the runs' TASK_FEATURE_LENGTHS."""
  del gin_scope
  gin.add_config_file_search_path(str(pathlib.Path(__file__).parents[2] /
                                      'gin'))
  gin.parse_config_files_and_bindings(
      ['runs/synthetic_tiny_base.gin'], ["MODEL_DIR = '/tmp/unused'"],
      finalize_config=False)
  lengths = gin.query_parameter('TASK_FEATURE_LENGTHS/macro.value')
  vocabulary = seqio.ByteVocabulary()
  longest = max(
      len(vocabulary.encode(f'{name}: ' + '9' * synthetic.MAX_DIGITS))
      for name in synthetic.SYNTHETIC_TASKS) + 1  # EOS
  assert longest <= lengths['inputs']
  ds = seqio.get_mixture_or_task('synthetic_prefixed_contains_seven').get_dataset(
      lengths, split='validation', shuffle=False)
  for ex in ds.as_numpy_iterator():
    assert ex['inputs'][-1] == 1  # Ends with EOS: nothing was cut.
    assert len(ex['inputs']) <= longest
