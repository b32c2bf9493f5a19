"""Vocabularies and output features; nothing here reads a file at import time.

The synthetic mixture uses seqio's ByteVocabulary (no file at all). GLUE and
SuperGLUE use `get_vocabulary()`, by default the T5 SentencePiece model, built
the first time a task needs it, so bindings made after
`import hyperprompt_jax.tasks` (the usual order in gin files) still apply:

    hyperprompt_jax.tasks.get_vocabulary.sentencepiece_model_path = '/m.model'
    hyperprompt_jax.tasks.get_vocabulary.kind = 'byte'  # tests, tiny runs
"""

import gin
import seqio

T5_SENTENCEPIECE_MODEL = (
    'gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model')
T5_EXTRA_IDS = 100


@gin.configurable(module='hyperprompt_jax.tasks')
def get_vocabulary(kind: str = 'sentencepiece',
                   sentencepiece_model_path: str = T5_SENTENCEPIECE_MODEL,
                   extra_ids: int = T5_EXTRA_IDS) -> seqio.Vocabulary:
  """The vocabulary of GLUE/SuperGLUE runs.

  Args:
    kind: 'sentencepiece' (the default) or 'byte' (seqio's ByteVocabulary,
      the synthetic mixture's vocabulary; needs no file).
    sentencepiece_model_path: the SentencePiece model, read on first use.
    extra_ids: sentinel ids appended to the SentencePiece vocabulary.
  """
  if kind == 'byte':
    return seqio.ByteVocabulary()
  if kind == 'sentencepiece':
    return seqio.SentencePieceVocabulary(sentencepiece_model_path, extra_ids)
  raise ValueError(
      f"Unknown vocabulary kind '{kind}'; use 'byte' or 'sentencepiece'.")


class DeferredVocabulary(seqio.Vocabulary):
  """`get_vocabulary()`, built on first use rather than at registration.

  Tasks are registered at import, before a gin file's bindings are applied;
  deferring lets `get_vocabulary.*` bindings reach the registered tasks.
  """

  def __init__(self):  # pylint: disable=super-init-not-called
    self._vocabulary = None

  @property
  def vocabulary(self) -> seqio.Vocabulary:
    if self._vocabulary is None:
      self._vocabulary = get_vocabulary()
    return self._vocabulary

  @property
  def eos_id(self):
    return self.vocabulary.eos_id

  @property
  def unk_id(self):
    return self.vocabulary.unk_id

  @property
  def pad_id(self):
    return self.vocabulary.pad_id

  @property
  def bos_id(self):
    return self.vocabulary.bos_id

  @property
  def extra_ids(self):
    return self.vocabulary.extra_ids

  @property
  def vocab_size(self):
    return self.vocabulary.vocab_size

  @property
  def _base_vocab_size(self):
    return self.vocabulary._base_vocab_size  # pylint: disable=protected-access

  def encode(self, s):
    return self.vocabulary.encode(s)

  def decode(self, ids):
    return self.vocabulary.decode(ids)

  def encode_tf(self, s):
    return self.vocabulary.encode_tf(s)

  def decode_tf(self, ids):
    return self.vocabulary.decode_tf(ids)

  # The public methods above delegate whole; these only satisfy the ABC.
  _encode = encode
  _decode = decode
  _encode_tf = encode_tf
  _decode_tf = decode_tf

  def __eq__(self, other):
    if isinstance(other, DeferredVocabulary):
      other = other.vocabulary
    return self.vocabulary == other


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  """The `inputs` and `targets` features of every task, both ending in EOS."""
  return {
      'inputs': seqio.Feature(vocabulary=vocabulary, add_eos=True),
      'targets': seqio.Feature(vocabulary=vocabulary, add_eos=True),
  }
