"""Vocabularies and output features; nothing here reads a file at import time.

The synthetic mixture uses seqio's ByteVocabulary (no file at all). GLUE and
SuperGLUE use the T5 SentencePiece model; its path is a gin binding that is
read the first time the vocabulary is used, so a binding made after
`import hyperprompt_jax.tasks` (the usual order in gin files) still applies.
"""

import gin
import seqio

T5_SENTENCEPIECE_MODEL = (
    'gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model')
T5_EXTRA_IDS = 100


@gin.configurable(module='hyperprompt_jax.tasks')
def sentencepiece_model_path(path: str = T5_SENTENCEPIECE_MODEL) -> str:
  """The SentencePiece model of GLUE/SuperGLUE runs (gin: `.path`)."""
  return path


class ConfiguredSentencePieceVocabulary(seqio.SentencePieceVocabulary):
  """T5 SentencePiece vocabulary whose model path comes from gin on first use."""

  def __init__(self, extra_ids: int = T5_EXTRA_IDS):
    super().__init__(sentencepiece_model_file='', extra_ids=extra_ids)

  @property
  def sentencepiece_model_file(self) -> str:
    return self._sentencepiece_model_file or sentencepiece_model_path()

  def _model_context(self):
    if not self._model:
      self._sentencepiece_model_file = sentencepiece_model_path()
    return super()._model_context()


@gin.configurable(module='hyperprompt_jax.tasks')
def get_vocabulary(kind: str = 'sentencepiece') -> seqio.Vocabulary:
  """The model's vocabulary: 'byte' (synthetic runs) or 'sentencepiece'.

  Tasks already carry their vocabulary (`output_features['targets']`); this is
  the same object kind for gin files that need a vocabulary by itself.
  """
  if kind == 'byte':
    return seqio.ByteVocabulary()
  if kind == 'sentencepiece':
    return ConfiguredSentencePieceVocabulary()
  raise ValueError(
      f"Unknown vocabulary kind '{kind}'; use 'byte' or 'sentencepiece'.")


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  """The `inputs` and `targets` features of every task, both ending in EOS."""
  return {
      'inputs': seqio.Feature(vocabulary=vocabulary, add_eos=True),
      'targets': seqio.Feature(vocabulary=vocabulary, add_eos=True),
  }
