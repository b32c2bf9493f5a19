"""Postprocessors: decoded text -> the values the metric functions score.

Each has seqio's signature `fn(text, example=None, is_target=False)`; seqio
calls it on the decoded prediction and on `targets_pretokenized`.
"""

from collections.abc import Mapping, Sequence


def _as_text(text: str | bytes) -> str:
  return text.decode('utf-8') if isinstance(text, bytes) else text


def class_id(text, label_classes: Sequence[str], example=None,
             is_target=False) -> int:
  """Index of `text` in `label_classes`; -1 for anything else."""
  del example, is_target
  text = _as_text(text).strip()
  return label_classes.index(text) if text in label_classes else -1


def to_float(text, example=None, is_target=False, default=-1.0) -> float:
  """`text` as a float; `default` when the model wrote something else."""
  del example, is_target
  try:
    return float(_as_text(text))
  except ValueError:
    return default


def stripped_text(text, example=None, is_target=False) -> str:
  """`text` with surrounding whitespace removed."""
  del example, is_target
  return _as_text(text).strip()


def multirc(text, example: Mapping, is_target=False) -> dict:
  """{'group': (paragraph, question) ids, 'value': class id}."""
  idx = example['idx']
  return {'group': (int(idx['paragraph']), int(idx['question'])),
          'value': class_id(text, ('False', 'True'))}


def record(text, example: Mapping, is_target=False) -> dict:
  """{'group': (passage, query) ids, 'value': gold answers or the answer}."""
  value = ([_as_text(a) for a in example['answers']] if is_target
           else stripped_text(text))
  idx = example['idx']
  return {'group': (int(idx['passage']), int(idx['query'])), 'value': value}
