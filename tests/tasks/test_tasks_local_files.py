"""The local-file source on small files in the official GLUE/SuperGLUE formats.

Also the only end-to-end test of MultiRC, which tfds.testing.mock_data cannot
serve (nested features).
"""

import json

import gin
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

import hyperprompt_jax.tasks  # pylint: disable=unused-import  # Registers.
from hyperprompt_jax.data.feature_converter import HyperPromptEncDecFeatureConverter

LENGTHS = {'inputs': 512, 'targets': 16}


@pytest.fixture
def local_dirs(tmp_path):
  """Official-format files under glue/ and super_glue/; gin points at them."""
  glue, super_glue = tmp_path / 'glue', tmp_path / 'super_glue'
  files = {
      glue / 'CoLA' / 'dev.tsv':
          'gj04\t1\t\tThe book was read.\ngj04\t0\t*\tRead book the was.\n',
      glue / 'CoLA' / 'test.tsv': 'index\tsentence\n0\tIt rains.\n',
      glue / 'MNLI' / 'dev_mismatched.tsv':
          'index\tpromptID\tsentence1\tsentence2\tlabel1\tgold_label\n'
          '0\t7\tA man sleeps.\tA person rests.\tentailment\tentailment\n'
          '1\t8\tA dog runs.\tA cat runs.\tcontradiction\tcontradiction\n',
      glue / 'STS-B' / 'dev.tsv':
          'index\tgenre\tsentence1\tsentence2\tscore\n'
          '0\tnews\tA cat.\tA small cat.\t3.8\n',
      super_glue / 'MultiRC' / 'val.jsonl': json.dumps({
          'idx': 0, 'passage': {'text': 'Tom has <b>two</b> cats.<br>',
                                'questions': [
              {'idx': 0, 'question': 'How many cats?', 'answers': [
                  {'idx': 0, 'text': 'Two', 'label': 1},
                  {'idx': 1, 'text': 'Three', 'label': 0}]},
              {'idx': 1, 'question': 'Who?', 'answers': [
                  {'idx': 2, 'text': 'Tom', 'label': 1}]}]}}) + '\n',
      super_glue / 'ReCoRD' / 'val.jsonl': json.dumps({
          'idx': 3, 'passage': {
              'text': 'Paris is in France.\n@highlight\nNice city',
              'entities': [{'start': 0, 'end': 4}, {'start': 12, 'end': 17}]},
          'qas': [{'idx': 9, 'query': '@placeholder is in France.',
                   'answers': [{'start': 0, 'end': 4, 'text': 'Paris'}]}]}),
      super_glue / 'WSC' / 'val.jsonl': json.dumps({
          'idx': 0, 'text': 'Mark told Pete he was late.', 'label': False,
          'target': {'span1_index': 0, 'span1_text': 'Mark',
                     'span2_index': 3, 'span2_text': 'he'}}) + '\n',
      super_glue / 'CB' / 'val.jsonl': json.dumps({
          'idx': 0, 'premise': 'It is wet.', 'hypothesis': 'It rained.',
          'label': 'neutral'}) + '\n',
  }
  for path, text in files.items():
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  gin.bind_parameter('hyperprompt_jax.tasks.benchmark_source.kind', 'local')
  gin.bind_parameter('hyperprompt_jax.tasks.benchmark_source.glue_dir',
                     str(glue))
  gin.bind_parameter('hyperprompt_jax.tasks.benchmark_source.super_glue_dir',
                     str(super_glue))
  gin.bind_parameter('hyperprompt_jax.tasks.get_vocabulary.kind', 'byte')
  yield glue, super_glue
  gin.clear_config()


def _raw(task_name, split='validation'):
  source = seqio.get_mixture_or_task(task_name).source
  return list(source.get_dataset(split, shuffle=False).as_numpy_iterator())


def _texts(task_name, split='validation'):
  ds = seqio.get_mixture_or_task(task_name).preprocessors[0](
      seqio.get_mixture_or_task(task_name).source.get_dataset(
          split, shuffle=False))
  return [(ex['inputs'].decode(), ex['targets'].decode())
          for ex in ds.as_numpy_iterator()]


def test_glue_tsv_rows_become_tfds_features(local_dirs):
  del local_dirs
  cola = _raw('glue_cola_v2')
  assert [(ex['sentence'], ex['label']) for ex in cola] == [
      (b'The book was read.', 1), (b'Read book the was.', 0)]
  assert _raw('glue_cola_v2', 'test')[0]['label'] == -1
  mnli = _raw('glue_mnli_v2', 'validation_mismatched')
  assert [ex['label'] for ex in mnli] == [0, 2]
  assert mnli[0]['premise'] == b'A man sleeps.'
  assert _raw('glue_stsb_v2')[0]['label'] == pytest.approx(3.8)


def test_text_to_text_formats(local_dirs):
  del local_dirs
  assert _texts('glue_mnli_v2', 'validation_mismatched')[1] == (
      'mnli hypothesis: A cat runs. premise: A dog runs.', 'contradiction')
  assert _texts('glue_stsb_v2') == [
      ('stsb sentence1: A cat. sentence2: A small cat.', '3.8')]
  assert _texts('super_glue_wsc_v102') == [
      ('wsc text: * Mark * told Pete # he # was late.', 'False')]
  assert _texts('super_glue_cb_v102') == [
      ('cb hypothesis: It rained. premise: It is wet.', 'neutral')]
  assert _texts('super_glue_record_v102') == [
      ('record query: @placeholder is in France. entities: France, Paris '
       'passage: Paris is in France. Nice city', 'Paris')]
  multirc = _texts('super_glue_multirc_v102')
  assert multirc[0] == ('multirc question: How many cats? answer: Two '
                        'paragraph: Tom has two cats. ', 'True')


def test_multirc_end_to_end(local_dirs):
  del local_dirs
  task_name = 'super_glue_multirc_v102'
  evaluator = seqio.Evaluator(
      task_name, HyperPromptEncDecFeatureConverter(pack=False),
      sequence_length=LENGTHS, logger_cls=())
  vocab = seqio.get_mixture_or_task(task_name).output_features[
      'targets'].vocabulary
  true_tokens = vocab.encode('True')

  def always_true(ds, model_feature_shapes=None):
    del model_feature_shapes
    return [(i, true_tokens) for i, _ in tfds.as_numpy(ds)]

  results, _ = evaluator.evaluate(compute_metrics=True, predict_fn=always_true)
  scores = results.result()[task_name]
  # Gold labels 1, 0 (question 0) and 1 (question 1): tp=2, fp=1.
  assert scores['f1a'] == pytest.approx(100 * 4 / 5)
  assert scores['exact_match'] == pytest.approx(50.0)


def test_malformed_tsv_row_names_file_and_line(local_dirs):
  glue, _ = local_dirs
  path = glue / 'RTE' / 'dev.tsv'
  path.parent.mkdir()
  path.write_text('index\tsentence1\tsentence2\tlabel\n'
                  '0\tA.\tB.\tentailment\n1\tonly two fields\n')
  with pytest.raises(ValueError, match=rf'{path}:3: expected the 4'):
    _raw('glue_rte_v2')
  path.write_text('index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tmaybe\n')
  with pytest.raises(ValueError, match=rf'{path}:2: .*maybe'):
    _raw('glue_rte_v2')


def test_malformed_jsonl_row_names_file_and_line(local_dirs):
  _, super_glue = local_dirs
  path = super_glue / 'BoolQ' / 'val.jsonl'
  path.parent.mkdir()
  path.write_text('{"idx": 0, "question": "q", "passage": "p", "label": true}\n'
                  '{"idx": 1, "question": \n')
  with pytest.raises(ValueError, match=rf'{path}:2: JSONDecodeError'):
    _raw('super_glue_boolq_v102')


def test_local_source_needs_its_folder():
  gin.bind_parameter('hyperprompt_jax.tasks.benchmark_source.kind', 'local')
  try:
    with pytest.raises(ValueError, match='glue_dir is not set'):
      _raw('glue_rte_v2')
  finally:
    gin.clear_config()


def test_local_sources_can_be_checkpointed_mid_stream(local_dirs, tmp_path):
  # Training checkpoints save the pipeline's iterator: the source must not be
  # a Python generator, which tf.data cannot save.
  del local_dirs
  ds = seqio.get_mixture_or_task('super_glue_record_v102').source.get_dataset(
      'validation', shuffle=False).repeat()
  iterator = iter(ds)
  next(iterator)
  prefix = tf.train.Checkpoint(iterator=iterator).write(str(tmp_path / 'it'))
  expected = next(iterator)
  resumed = iter(ds)
  tf.train.Checkpoint(iterator=resumed).read(prefix).assert_consumed()
  got = next(resumed)
  assert tf.nest.map_structure(lambda a, b: bool(tf.reduce_all(a == b)),
                               got, expected) == tf.nest.map_structure(
                                   lambda _: True, expected)
  assert got['entities'].shape.rank == 1  # Lists stay [None] string tensors.
