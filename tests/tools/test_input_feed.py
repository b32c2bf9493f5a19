"""Generated GLUE files of the input-feed measurement (`input_feed`)."""

from hyperprompt_jax.tasks import glue
from hyperprompt_jax.tasks import local_files
from hyperprompt_jax.tools import input_feed


def test_generated_glue_files_read_as_the_official_ones(tmp_path):
  """Every GLUE dataset's generated train file reads through the local-files
  reader into ROWS_PER_FILE labelled examples with text in every feature.
  Catches a header, column order (CoLA has none) or label form the reader
  refuses or reads as unlabelled (-1)."""
  sentences = input_feed.write_glue_files(tmp_path)
  for dataset in glue.GLUE_TASKS.values():
    examples = list(local_files.read_glue_tsv(
        str(tmp_path / dataset.folder / 'train.tsv'), dataset.columns,
        dataset.label_classes))
    assert len(examples) == input_feed.ROWS_PER_FILE, dataset.folder
    for example in examples:
      assert all(example[f] for f in dataset.columns.features), example
      if dataset.label_classes is None:
        assert 0 <= example['label'] <= 5
      else:
        assert 0 <= example['label'] < len(dataset.label_classes)
  words = [len(s.split()) for s in sentences]
  assert abs(sum(words) / len(words) - input_feed.WORDS_PER_SENTENCE) < 1
