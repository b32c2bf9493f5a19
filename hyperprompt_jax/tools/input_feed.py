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
files; SuperGLUE is read only so.
"""

import atexit
import dataclasses
import functools
import os
import pathlib
import shutil
import tempfile
import time
from typing import Optional, Type

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


def _benchmarks_read(mixture_or_task_name: str) -> set[str]:
  """Which of 'glue' and 'super_glue' the mixture's tasks read."""
  from hyperprompt_jax.tasks import glue  # pylint: disable=g-import-not-at-top
  from hyperprompt_jax.tasks import super_glue  # pylint: disable=g-import-not-at-top
  provider = seqio.get_mixture_or_task(mixture_or_task_name)
  names = {t.name for t in getattr(provider, 'tasks', [provider])}
  return {benchmark for benchmark, module, datasets in (
      ('glue', glue, glue.GLUE_TASKS),
      ('super_glue', super_glue, super_glue.SUPER_GLUE_TASKS))
          if names & {module.task_name(n) for n in datasets}}


@functools.lru_cache(maxsize=None)
def _generated_files() -> tuple[str, str]:
  """(GLUE folder, SentencePiece model) generated once per process, removed
  at its exit."""
  folder = pathlib.Path(tempfile.mkdtemp(prefix='input_feed_'))
  atexit.register(shutil.rmtree, folder, ignore_errors=True)
  sentences = write_glue_files(folder / 'glue')
  return str(folder / 'glue'), _train_sentencepiece(sentences, folder)


def use_generated_glue(mixture_or_task_name: str) -> bool:
  """Points GLUE at generated local files (and, where the SentencePiece model
  is not local, the model trained on them) unless the run reads local files
  of its own; whether it did. The gin bindings stay until the config is
  cleared."""
  from hyperprompt_jax import tasks  # pylint: disable=g-import-not-at-top
  benchmarks = _benchmarks_read(mixture_or_task_name)
  source = tasks.benchmark_source()
  if 'super_glue' in benchmarks and source.kind != 'local':
    # TFDS would download it; no generator writes its JSONL files.
    raise ValueError(
        f'--input_feed reads {mixture_or_task_name} from TFDS, which the plan '
        'does not download: give SuperGLUE\'s official files, '
        "--gin.hyperprompt_jax.tasks.benchmark_source.kind=\"'local'\" "
        "--gin.hyperprompt_jax.tasks.benchmark_source.super_glue_dir=\"'DIR'\""
        ' (and glue_dir for GLUE)')
  if 'glue' not in benchmarks:
    return False
  glue_dir, model = _generated_files()
  if source.kind == 'local' and source.local_dirs['glue'] != glue_dir:
    return False
  bindings = ["hyperprompt_jax.tasks.benchmark_source.kind = 'local'",
              f"hyperprompt_jax.tasks.benchmark_source.glue_dir = '{glue_dir}'"]
  if _local_sentencepiece_model() is None:
    bindings.append('hyperprompt_jax.tasks.get_vocabulary.'
                    f"sentencepiece_model_path = '{model}'")
  gin.parse_config(bindings)
  return True


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
  generated = use_generated_glue(cfg.mixture_or_task_name)
  iterator = pipeline.get_dataset(cfg, feature_converter_cls).as_numpy_iterator()
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
