"""seqio metric functions, `(targets, predictions) -> {name: score}`.

Scores are percentages (x100), as T5 and the GLUE/SuperGLUE leaderboards
report them. Targets and predictions are the postprocessed values: class ids,
floats, strings, or the dicts written by the MultiRC and ReCoRD postprocessors.
"""

import collections
import re
import string
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import scipy.stats
import sklearn.metrics

_PUNCTUATION = frozenset(string.punctuation)

MetricFn = Callable[[Sequence, Sequence], dict[str, float]]


def accuracy(targets: Sequence, predictions: Sequence) -> dict[str, float]:
  """Share of predictions equal to their target."""
  return {'accuracy': 100 * float(np.mean(
      [t == p for t, p in zip(targets, predictions, strict=True)]))}


def f1(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
  """Binary F1 of class 1 (e.g. 'equivalent', 'duplicate').

  Any other value, including an unparsable prediction (-1), is a negative; the
  score is 0 when class 1 never occurs.
  """
  score = sklearn.metrics.f1_score(targets, predictions, labels=[1],
                                   average=None, zero_division=0.0)[0]
  return {'f1': 100 * float(score)}


def macro_f1(num_classes: int) -> MetricFn:
  """F1 averaged over `num_classes` classes (CommitmentBank's F1)."""

  def metric(targets, predictions):
    score = sklearn.metrics.f1_score(targets, predictions,
                                     labels=range(num_classes),
                                     average='macro', zero_division=0.0)
    return {'macro_f1': 100 * float(score)}

  return metric


def matthews_corrcoef(targets: Sequence[int],
                      predictions: Sequence[int]) -> dict[str, float]:
  """Matthews correlation of class 1 against the rest (CoLA); 0 if undefined.

  Binarised first, so an unparsable prediction (-1) counts as a negative
  instead of a third class.
  """
  mcc = sklearn.metrics.matthews_corrcoef(np.asarray(targets) == 1,
                                          np.asarray(predictions) == 1)
  return {'matthews_corrcoef': 100 * float(mcc)}


def _correlation(fn, targets, predictions) -> float:
  """A scipy correlation, 0 where it is undefined (a constant input)."""
  if np.std(targets) == 0 or np.std(predictions) == 0:
    return 0.0
  return 100 * float(fn(targets, predictions)[0])


def pearson_spearman(targets: Sequence[float],
                     predictions: Sequence[float]) -> dict[str, float]:
  """Pearson and Spearman correlations (STS-B)."""
  targets = np.asarray(targets, np.float64)
  predictions = np.asarray(predictions, np.float64)
  return {
      'pearson': _correlation(scipy.stats.pearsonr, targets, predictions),
      'spearman': _correlation(scipy.stats.spearmanr, targets, predictions),
  }


def _group_by(targets, predictions) -> dict:
  """{group: [(target value, predicted value), ...]} in first-seen order."""
  groups = collections.defaultdict(list)
  for t, p in zip(targets, predictions, strict=True):
    groups[t['group']].append((t['value'], p['value']))
  return groups


def multirc(targets: Sequence[Mapping],
            predictions: Sequence[Mapping]) -> dict[str, float]:
  """MultiRC: F1 over all answers (F1a) and exact match per question (EM).

  Targets and predictions are `{'group': question id, 'value': class id}`.
  """
  scores = f1([t['value'] for t in targets], [p['value'] for p in predictions])
  groups = _group_by(targets, predictions)
  exact = [all(t == p for t, p in pairs) for pairs in groups.values()]
  return {'f1a': scores['f1'], 'exact_match': 100 * float(np.mean(exact))}


def _normalize_answer(text: str) -> str:
  """SQuAD normalisation: lower case; no punctuation, articles, extra spaces."""
  text = ''.join(c for c in text.lower() if c not in _PUNCTUATION)
  text = re.sub(r'\b(a|an|the)\b', ' ', text)
  return ' '.join(text.split())


def _token_f1(target: str, prediction: str) -> float:
  """Bag-of-tokens F1 of two normalised answers."""
  target_tokens = target.split()
  prediction_tokens = prediction.split()
  common = collections.Counter(target_tokens) & collections.Counter(
      prediction_tokens)
  overlap = sum(common.values())
  if not overlap:
    return 0.0
  precision = overlap / len(prediction_tokens)
  recall = overlap / len(target_tokens)
  return 2 * precision * recall / (precision + recall)


def record(targets: Sequence[Mapping],
           predictions: Sequence[Mapping]) -> dict[str, float]:
  """ReCoRD: max exact match and token F1 over the gold answers of a query.

  Targets are `{'group': query id, 'value': [answers]}`, predictions
  `{'group': query id, 'value': answer}`. The preprocessor writes one training
  example per gold answer, so each query counts once (its first example).
  """
  exact, token_f1 = [], []
  for pairs in _group_by(targets, predictions).values():
    answers, prediction = pairs[0]
    prediction = _normalize_answer(prediction)
    answers = [_normalize_answer(a) for a in answers]
    exact.append(max((float(prediction == a) for a in answers), default=0.0))
    token_f1.append(max((_token_f1(a, prediction) for a in answers),
                        default=0.0))
  return {'exact_match': 100 * float(np.mean(exact)),
          'f1': 100 * float(np.mean(token_f1))}


def benchmark_average(scores: Mapping[str, Mapping[str, float]]) -> float:
  """Leaderboard score: mean over tasks of the mean of each task's metrics.

  GLUE and SuperGLUE first average the metrics of a task that reports several
  (MRPC's F1 and accuracy, STS-B's Pearson and Spearman, ...), then average the
  tasks with equal weight.

  Args:
    scores: {task name: {metric name: score}}, e.g. seqio's eval results.
  """
  if not scores:
    raise ValueError('benchmark_average needs the scores of at least one task.')
  return float(np.mean([np.mean(list(task_scores.values()))
                        for task_scores in scores.values()]))
