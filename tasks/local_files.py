"""Readers of the official GLUE (TSV) and SuperGLUE (JSONL) distribution files.

Each reader turns the rows of one file into examples with exactly the features
(names and label ids) that TFDS serves for the same dataset, so both sources
share one preprocessing path. A malformed row raises `ValueError` naming the
file and line.
"""

import csv
import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import tensorflow as tf

Example = dict[str, Any]


class MalformedRowError(ValueError):
  """A row of a local file that cannot become an example."""

  def __init__(self, path: str, line: int, reason: str):
    super().__init__(f'{path}:{line}: {reason}')


def parse_label(value: Any, label_classes: Sequence[str] | None) -> int | float:
  """A raw label -> the TFDS label: class id, or a float for regression.

  Accepts class names ('entailment'), ids ('1', 1) and booleans (true); a
  missing label (None, test rows) becomes -1, as in TFDS.
  """
  if value is None:
    return -1
  if label_classes is None:
    return float(value)
  if isinstance(value, bool):
    value = int(value)
  if isinstance(value, str) and value in label_classes:
    return label_classes.index(value)
  class_index = int(value)
  if not 0 <= class_index < len(label_classes):
    raise ValueError(f'label {value!r} is not one of {list(label_classes)}')
  return class_index


@dataclasses.dataclass(frozen=True)
class GlueColumns:
  """How one GLUE dataset's TSV columns map onto its TFDS features.

  Attributes:
    features: TFDS feature name -> TSV column name.
    label_column: the label's column; absent from test files.
    headerless: column names of files without a header row (CoLA train/dev).
  """
  features: Mapping[str, str]
  label_column: str
  headerless: Sequence[str] | None = None


def read_glue_tsv(path: str, columns: GlueColumns,
                  label_classes: Sequence[str] | None) -> Iterator[Example]:
  """Yields {features..., 'label', 'idx'} from one GLUE TSV file.

  Unlabelled (test) rows get label -1, as in TFDS; `idx` is the row number.
  """
  with tf.io.gfile.GFile(path) as f:
    lines = f.read().splitlines()
  # CoLA's train/dev files have no header; its test file does.
  has_header = columns.headerless is None or (
      bool(lines) and lines[0].startswith('index\t'))
  fieldnames = None if has_header else list(columns.headerless)
  reader = csv.DictReader(lines, fieldnames=fieldnames, delimiter='\t',
                          quoting=csv.QUOTE_NONE)
  required = [c for c in (*columns.features.values(), columns.label_column)
              if c != columns.label_column or c in reader.fieldnames]
  for idx, row in enumerate(reader):
    line = idx + (2 if has_header else 1)
    if None in row or any(row[c] is None for c in required):
      raise MalformedRowError(
          path, line, f'expected the {len(reader.fieldnames)} tab-separated '
          f'columns {reader.fieldnames}')
    example = {name: row[c] for name, c in columns.features.items()}
    try:
      example['label'] = parse_label(row.get(columns.label_column),
                                     label_classes)
    except ValueError as e:
      raise MalformedRowError(path, line, str(e)) from e
    example['idx'] = idx
    yield example


def read_jsonl(path: str, to_examples: Callable[[dict], list[Example]]
               ) -> Iterator[Example]:
  """Yields the examples `to_examples` makes of each row of a JSONL file."""
  with tf.io.gfile.GFile(path) as f:
    for line, text in enumerate(f, start=1):
      if not text.strip():
        continue
      try:
        yield from to_examples(json.loads(text))
      except (ValueError, KeyError, TypeError) as e:
        raise MalformedRowError(path, line, f'{type(e).__name__}: {e}') from e


def flat_row(label_classes: Sequence[str]) -> Callable[[dict], list[Example]]:
  """A SuperGLUE row whose fields are the TFDS features (BoolQ, CB, ...)."""

  def to_examples(row):
    example = {k: v for k, v in row.items() if not isinstance(v, dict)}
    example['label'] = parse_label(row.get('label'), label_classes)
    return [example]

  return to_examples


def wsc_row(row: dict) -> list[Example]:
  """WSC: the nested `target` spans become top-level features."""
  return flat_row(('False', 'True'))({**row, **row['target']})


def multirc_row(row: dict) -> list[Example]:
  """MultiRC: one example per (question, answer) of a paragraph."""
  passage = row['passage']
  return [{
      'paragraph': passage['text'],
      'question': question['question'],
      'answer': answer['text'],
      'label': parse_label(answer.get('label'), ('False', 'True')),
      'idx': {'paragraph': row['idx'], 'question': question['idx'],
              'answer': answer['idx']},
  } for question in passage['questions'] for answer in question['answers']]


def record_row(row: dict) -> list[Example]:
  """ReCoRD: one example per query, entities and answers as strings."""
  text = row['passage']['text']
  entities = [text[e['start']:e['end'] + 1] for e in row['passage']['entities']]
  return [{
      'passage': text,
      'query': qa['query'],
      'entities': sorted(set(entities)),
      'answers': sorted({a['text'] for a in qa.get('answers', ())}),
      'idx': {'passage': row['idx'], 'query': qa['idx']},
  } for qa in row['qas']]


def _column(values: Sequence[Any]) -> Any:
  """One feature of all examples as a tensor (nested dicts stay dicts)."""
  first = values[0]
  if isinstance(first, dict):
    return {k: _column([v[k] for v in values]) for k in first}
  if isinstance(first, list):
    return tf.ragged.constant(values, dtype=tf.string, ragged_rank=1)
  dtype = {str: tf.string, int: tf.int64, float: tf.float32}[type(first)]
  return tf.constant(values, dtype)


def to_dataset(examples: Sequence[Example], path: str) -> tf.data.Dataset:
  """A tf.data.Dataset of `examples` (all read from `path`).

  Built from tensors, not a Python generator, so that checkpoints can save
  the position of a training pipeline that reads it.
  """
  if not examples:
    raise ValueError(f'{path}: no examples.')
  dataset = tf.data.Dataset.from_tensor_slices(_column(examples))
  # Slices of ragged string lists arrive as rank-0 ragged specs; passing
  # through a map gives them plain [None] tensor specs.
  return dataset.map(lambda example: example)
