"""Text-to-text formats of GLUE and SuperGLUE, following T5.

Inputs are `"<benchmark> <feature>: <text> <feature>: <text> ..."`, targets the
label's name (or '<unk>' for unlabelled test rows, whose label is -1). The
examples come from TFDS or from `local_files`, which writes the same features.
"""

from collections.abc import Mapping, Sequence

import seqio
import tensorflow as tf

UNLABELLED = '<unk>'


def _label_name(label: tf.Tensor, label_classes: Sequence[str]) -> tf.Tensor:
  """The class name of `label`, or '<unk>' for -1."""
  return tf.cond(
      tf.equal(label, -1), lambda: tf.constant(UNLABELLED),
      lambda: tf.gather(tf.constant(label_classes), label))


def _join(benchmark_name: str, x: Mapping[str, tf.Tensor],
          feature_names: Sequence[str]) -> tf.Tensor:
  """'<benchmark> name1: text1 name2: text2 ...'."""
  parts = [benchmark_name]
  for name in feature_names:
    parts += [f'{name}:', x[name]]
  return tf.strings.join(parts, separator=' ')


@seqio.map_over_dataset
def text_to_text(x: Mapping[str, tf.Tensor], benchmark_name: str,
                 feature_names: Sequence[str], label_classes: Sequence[str]):
  """Classification example -> {'inputs', 'targets', 'idx'}."""
  return {'inputs': _join(benchmark_name, x, feature_names),
          'targets': _label_name(x['label'], label_classes),
          'idx': x['idx']}


@seqio.map_over_dataset
def stsb(x: Mapping[str, tf.Tensor]):
  """STS-B: the score rounded to the nearest 0.2, written like '3.4'."""
  score = tf.round(tf.cast(x['label'], tf.float32) * 5) / 5
  return {'inputs': _join('stsb', x, ('sentence1', 'sentence2')),
          'targets': tf.strings.as_string(score, precision=1),
          'idx': x['idx']}


@seqio.map_over_dataset
def multirc(x: Mapping[str, tf.Tensor]):
  """MultiRC: one example per answer; HTML markup removed from the paragraph."""
  paragraph = tf.strings.regex_replace(x['paragraph'], '<br>', ' ')
  paragraph = tf.strings.regex_replace(paragraph, '</?b>', '')
  x = {**x, 'paragraph': paragraph}
  return {'inputs': _join('multirc', x, ('question', 'answer', 'paragraph')),
          'targets': _label_name(x['label'], ('False', 'True')),
          'idx': x['idx']}


def _mark_span(text: tf.Tensor, span_text: tf.Tensor, word_index: tf.Tensor,
               mark: str) -> tf.Tensor:
  """Surrounds `span_text`, starting at word `word_index`, with `mark`."""
  pattern = tf.strings.join(
      ['^((?:\\S+\\s){', tf.strings.as_string(word_index), '})(',
       _escape_regex(span_text), ')'])
  return tf.strings.regex_replace(text, pattern, f'\\1{mark} \\2 {mark}')


def _escape_regex(text: tf.Tensor) -> tf.Tensor:
  """`text` with regex metacharacters escaped."""
  return tf.strings.regex_replace(text, r'([\\.^$|?*+()\[\]{}])', r'\\\1')


@seqio.map_over_dataset
def wsc(x: Mapping[str, tf.Tensor]):
  """WSC: the noun phrase marked with '*' and the pronoun with '#'."""
  text = _mark_span(x['text'], x['span1_text'], x['span1_index'], '*')
  # Marking span 1 added two words before span 2 when it comes first.
  span2_index = x['span2_index'] + 2 * tf.cast(
      x['span1_index'] < x['span2_index'], x['span2_index'].dtype)
  text = _mark_span(text, x['span2_text'], span2_index, '#')
  return {'inputs': tf.strings.join(['wsc text:', text], separator=' '),
          'targets': _label_name(x['label'], ('False', 'True')),
          'idx': x['idx']}


def record(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """ReCoRD: one example per gold answer ('<unk>' when there is none).

  Inputs are 'record query: <query> entities: <e1>, <e2> passage: <passage>';
  every example keeps all gold answers in `answers` for scoring.
  """

  def per_answer(x):
    passage = tf.strings.regex_replace(
        x['passage'], r'(\.|\?|\!|\"|\')\n@highlight\n', r'\1 ')
    passage = tf.strings.regex_replace(passage, r'\n@highlight\n', '. ')
    inputs = tf.strings.join([
        'record query:', x['query'], 'entities:',
        tf.strings.reduce_join(x['entities'], separator=', '), 'passage:',
        passage], separator=' ')
    answers = x['answers']
    targets = tf.cond(tf.size(answers) > 0, lambda: answers,
                      lambda: tf.constant([UNLABELLED]))
    num_targets = tf.size(targets)
    return tf.data.Dataset.from_tensor_slices({
        'inputs': tf.fill([num_targets], inputs),
        'targets': targets,
        'answers': tf.repeat(answers[tf.newaxis], num_targets, axis=0),
        'idx': {k: tf.fill([num_targets], v) for k, v in x['idx'].items()},
    })

  return dataset.flat_map(per_answer)
