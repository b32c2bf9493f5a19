"""Metric functions and postprocessors against hand-computed values."""

import pytest

from hyperprompt_jax.tasks import metrics
from hyperprompt_jax.tasks import postprocessors


def test_accuracy():
  assert metrics.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == {'accuracy': 50.0}


def test_binary_f1_and_matthews():
  # tp=2, fp=1, fn=1, tn=1.
  targets, predictions = [1, 1, 0, 0, 1], [1, 0, 1, 0, 1]
  assert metrics.f1(targets, predictions)['f1'] == pytest.approx(100 * 4 / 6)
  # (tp*tn - fp*fn) / sqrt(3*3*2*2) = 1/6.
  assert metrics.matthews_corrcoef(targets, predictions)[
      'matthews_corrcoef'] == pytest.approx(100 / 6)


def test_unparsable_predictions_count_as_negatives():
  # -1 (a prediction no label matched) is a negative, not a third class:
  # tp=1, fp=0, fn=2, tn=1, so F1 = 2/(2+2) and MCC = 1/sqrt(1*3*1*3).
  targets, predictions = [1, 1, 1, 0], [1, -1, 0, -1]
  assert metrics.f1(targets, predictions)['f1'] == pytest.approx(50.0)
  assert metrics.matthews_corrcoef(targets, predictions)[
      'matthews_corrcoef'] == pytest.approx(100 / 3)
  # Class F1s: 2tp/(2tp+fp+fn) = 4/(4+1+1) for class 0 (the -1 a false
  # negative), 0 for class 1 (tp=0) and 0 for class 2 (never occurs).
  scores = metrics.macro_f1(num_classes=3)([0, 0, 1, 0], [0, 0, 0, -1])
  assert scores['macro_f1'] == pytest.approx(100 * 2 / 9)


def test_degenerate_scores_are_zero():
  assert metrics.f1([0, 0], [0, 0]) == {'f1': 0.0}
  assert metrics.matthews_corrcoef([1, 0], [1, 1]) == {'matthews_corrcoef': 0.0}
  assert metrics.pearson_spearman([1, 2], [3, 3]) == {'pearson': 0.0,
                                                     'spearman': 0.0}


def test_macro_f1():
  # Class F1s: 1, 0 and 2/(2+1+1) = 0.5.
  scores = metrics.macro_f1(num_classes=3)([0, 1, 2, 2], [0, 2, 2, 1])
  assert scores['macro_f1'] == pytest.approx(50.0)


def test_pearson_spearman():
  # Deviations (-1.5, -.5, .5, 1.5) and (-1.5, .5, -.5, 1.5): 4 / 5.
  scores = metrics.pearson_spearman([1, 2, 3, 4], [1, 3, 2, 4])
  assert scores['pearson'] == pytest.approx(80.0)
  assert scores['spearman'] == pytest.approx(80.0)


def test_multirc_f1a_and_exact_match():
  targets = [{'group': (0, 0), 'value': 1}, {'group': (0, 0), 'value': 0},
             {'group': (0, 1), 'value': 1}]
  predictions = [{'group': (0, 0), 'value': 1}, {'group': (0, 0), 'value': 0},
                 {'group': (0, 1), 'value': 0}]
  scores = metrics.multirc(targets, predictions)
  assert scores['f1a'] == pytest.approx(100 * 2 / 3)  # tp=1, fn=1.
  assert scores['exact_match'] == pytest.approx(50.0)


def test_record_counts_each_query_once():
  targets = [{'group': (0, 0), 'value': ['The Cat', 'dog']},
             {'group': (0, 0), 'value': ['The Cat', 'dog']},
             {'group': (0, 1), 'value': ['New York City']}]
  predictions = [{'group': (0, 0), 'value': 'cat.'},
                 {'group': (0, 0), 'value': 'wrong'},
                 {'group': (0, 1), 'value': 'york city'}]
  scores = metrics.record(targets, predictions)
  assert scores['exact_match'] == pytest.approx(50.0)
  # 'york city' vs 'new york city': precision 1, recall 2/3, F1 0.8.
  assert scores['f1'] == pytest.approx(100 * (1 + 0.8) / 2)


def test_benchmark_average_averages_metrics_then_tasks():
  scores = {'mrpc': {'f1': 80.0, 'accuracy': 90.0}, 'rte': {'accuracy': 70.0}}
  assert metrics.benchmark_average(scores) == pytest.approx(77.5)
  with pytest.raises(ValueError):
    metrics.benchmark_average({})


def test_postprocessors():
  labels = ('entailment', 'not_entailment')
  assert postprocessors.class_id(b' not_entailment', labels) == 1
  assert postprocessors.class_id('maybe', labels) == -1
  assert postprocessors.to_float(b'3.4') == pytest.approx(3.4)
  assert postprocessors.to_float('three') == -1.0
  example = {'idx': {'passage': 3, 'query': 7},
             'answers': [b'Paris', b'France']}
  assert postprocessors.record(b'x', example, is_target=True) == {
      'group': (3, 7), 'value': ['Paris', 'France']}
  assert postprocessors.record(b' Lyon ', example) == {'group': (3, 7),
                                                       'value': 'Lyon'}
