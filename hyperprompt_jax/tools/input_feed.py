"""Host CPU that a run's input pipeline spends per batch, measured here.

The run's own training pipeline (`pipeline.get_dataset`: its mixture,
lengths, packing, autotuning) reads one host's share of the global batch;
after `warmup` batches, the process CPU time (every thread, tf.data's
included) over `num_batches` batches gives core-seconds per batch. Over a
step time, that is how many host cores keep the chips fed; the transfer to
the devices is not included.

Nothing is downloaded. GLUE, which runs read from TFDS by default, is read
instead through the local-files source from generated files in the official
format (`ROWS_PER_FILE` rows per dataset, sentences of about
`WORDS_PER_SENTENCE` words); where the run's SentencePiece model is not a
local file (the T5 model is on gs://), a model trained on the generated text
with one piece per word tokenizes them, close to T5's 1.3 pieces per
English word. A run whose benchmark source is already local reads its own
files.
"""

import contextlib
import dataclasses
import os
import pathlib
import tempfile
import time
from typing import Iterator, Optional, Type

import gin
import numpy as np
import seqio

ROWS_PER_FILE = 512
WORDS_PER_SENTENCE = 20
_DISTINCT_WORDS = 2000


@dataclasses.dataclass(frozen=True)
class FeedCost:
  """The input pipeline's cost on this host.

  host_batch_size: rows per batch (one host's share of the global batch).
  core_seconds_per_batch: process CPU seconds per batch.
  wall_seconds_per_batch: elapsed seconds per batch.
  batches: batches measured (after the warm-up).
  generated_glue: GLUE read from generated files (see the module doc).
  """
  host_batch_size: int
  core_seconds_per_batch: float
  wall_seconds_per_batch: float
  batches: int
  generated_glue: bool

  def cores_for(self, step_seconds: float) -> float:
    """Host cores busy full time to make one batch per step."""
    return self.core_seconds_per_batch / step_seconds


def _words(rng: np.random.Generator) -> list[str]:
  """Pseudo-words of 2-9 letters; drawn Zipf-like, as words of a text are."""
  letters = np.array(list('etaoinshrdlcumwfgypbvkjxqz'))
  lengths = rng.integers(2, 10, size=_DISTINCT_WORDS)
  return [''.join(rng.choice(letters, size=n)) for n in lengths]


def _sentences(rng: np.random.Generator, words: list[str], count: int
               ) -> list[str]:
  weights = 1.0 / np.arange(1, len(words) + 1)
  weights /= weights.sum()
  lengths = rng.poisson(WORDS_PER_SENTENCE - 3, size=count) + 3
  return [' '.join(rng.choice(words, size=n, p=weights)).capitalize() + '.'
          for n in lengths]


def write_glue_files(folder: pathlib.Path, seed: int = 0) -> list[str]:
  """Official-format train files of every GLUE dataset under `folder`;
  returns every sentence written."""
  from hyperprompt_jax.tasks import glue  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  words, written = _words(rng), []
  for dataset in glue.GLUE_TASKS.values():
    columns = dataset.columns
    header = list(columns.headerless or
                  [*columns.features.values(), columns.label_column])
    lines = [] if columns.headerless else ['\t'.join(header)]
    for i in range(ROWS_PER_FILE):
      label = (f'{rng.uniform(0, 5):.2f}' if dataset.label_classes is None
               else str(i % len(dataset.label_classes)))
      row = []
      for column in header:
        if column == columns.label_column:
          row.append(label)
        elif column in columns.features.values():
          [text] = _sentences(rng, words, 1)
          row.append(text)
          written.append(text)
        else:  # CoLA's source and original-label columns
          row.append('gen')
      lines.append('\t'.join(row))
    path = folder / dataset.folder / 'train.tsv'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('\n'.join(lines) + '\n')
  return written


def _train_sentencepiece(sentences: list[str], folder: pathlib.Path) -> str:
  """A SentencePiece model with a piece per generated word; its path."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  corpus = folder / 'corpus.txt'
  corpus.write_text('\n'.join(sentences) + '\n')
  prefix = str(folder / 'generated')
  distinct = {w for s in sentences for w in s.lower().rstrip('.').split()}
  spm.SentencePieceTrainer.train(
      input=str(corpus), model_prefix=prefix, model_type='unigram',
      vocab_size=min(len(distinct) + 100, 4000), character_coverage=1.0,
      minloglevel=2)
  return prefix + '.model'


def _reads_glue(mixture_or_task_name: str) -> bool:
  from hyperprompt_jax.tasks import glue  # pylint: disable=g-import-not-at-top
  provider = seqio.get_mixture_or_task(mixture_or_task_name)
  tasks = getattr(provider, 'tasks', [provider])
  names = {glue.task_name(n) for n in glue.GLUE_TASKS}
  return any(t.name in names for t in tasks)


@contextlib.contextmanager
def offline_sources(mixture_or_task_name: str) -> Iterator[bool]:
  """Points GLUE at generated local files (and, where the SentencePiece model
  is not local, a model trained on them) unless the run reads local files
  already; yields whether it did. The gin bindings stay until the config is
  cleared."""
  from hyperprompt_jax import tasks  # pylint: disable=g-import-not-at-top
  if (not _reads_glue(mixture_or_task_name) or
      tasks.benchmark_source().kind == 'local'):
    yield False
    return
  with tempfile.TemporaryDirectory(prefix='input_feed_') as folder:
    folder = pathlib.Path(folder)
    sentences = write_glue_files(folder / 'glue')
    bindings = ["hyperprompt_jax.tasks.benchmark_source.kind = 'local'",
                f"hyperprompt_jax.tasks.benchmark_source.glue_dir = '{folder}/glue'"]
    if _local_sentencepiece_model() is None:
      bindings.append(
          'hyperprompt_jax.tasks.get_vocabulary.sentencepiece_model_path = '
          f"'{_train_sentencepiece(sentences, folder)}'")
    gin.parse_config(bindings)
    yield True


def _local_sentencepiece_model() -> Optional[str]:
  """The run's SentencePiece model, where it is a local file."""
  try:
    path = gin.query_parameter(
        'hyperprompt_jax.tasks.get_vocabulary.sentencepiece_model_path')
  except ValueError:  # unbound: T5's model on gs://
    return None
  return path if os.path.isfile(path) else None


def measure(cfg, feature_converter_cls: Type[seqio.FeatureConverter],
            host_batch_size: int, num_batches: int = 20,
            warmup: int = 3) -> FeedCost:
  """Core-seconds per batch of `cfg` (a `pipeline.DatasetConfig`) read with
  `host_batch_size` rows per batch."""
  from hyperprompt_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  cfg = dataclasses.replace(cfg, batch_size=host_batch_size)
  with offline_sources(cfg.mixture_or_task_name) as generated:
    batches = pipeline.get_dataset(cfg, feature_converter_cls)
    iterator = batches.as_numpy_iterator()
    for _ in range(warmup):
      next(iterator)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(num_batches):
      next(iterator)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
  return FeedCost(host_batch_size=host_batch_size,
                  core_seconds_per_batch=cpu / num_batches,
                  wall_seconds_per_batch=wall / num_batches,
                  batches=num_batches, generated_glue=generated)
