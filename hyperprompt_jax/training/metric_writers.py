"""Metric output: TensorBoard event files, console lines, a progress bar.

Only process 0 writes TensorBoard files and prints; the others stay quiet so
a multi-process run logs once.
"""

import os
import sys
from typing import Mapping, Optional

import jax
import tqdm
from clu import metric_writers


# The console's train lines would grow by eight badput fields; the run's
# totals are printed as one line of their own.
TENSORBOARD_ONLY = ('badput/', 'run/')


class ConsoleWriter(metric_writers.LoggingWriter):
  """Prints scalars as one line per step to stdout, e.g.

  `[train step 100] accuracy=0.41 learning_rate=0.001 loss=2.3 ...`

  Lines go through `tqdm.write` so they never break a live progress bar.
  Scalars under `TENSORBOARD_ONLY` prefixes (goodput's parts) are left out.
  """

  def __init__(self, collection: str):
    super().__init__(collection=collection)
    self._collection = collection

  def write_scalars(self, step: int, scalars: Mapping[str, float]):
    values = ' '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
                      for k, v in sorted(scalars.items())
                      if not k.startswith(TENSORBOARD_ONLY))
    if not values:
      return
    tqdm.tqdm.write(f'[{self._collection} step {step}] {values}',
                    file=sys.stdout)


def create_writer(model_dir: str, collection: str) -> metric_writers.MetricWriter:
  """TensorBoard files under MODEL_DIR/<collection> plus console lines."""
  if jax.process_index() != 0:
    return metric_writers.MultiWriter([])
  return metric_writers.MultiWriter([
      ConsoleWriter(collection),
      metric_writers.SummaryWriter(os.path.join(model_dir, collection)),
  ])


def progress_bar(start: int, total: int) -> Optional[tqdm.tqdm]:
  """A step progress bar on stderr when it is a terminal (else None)."""
  if jax.process_index() != 0 or not sys.stderr.isatty():
    return None
  return tqdm.tqdm(initial=start, total=total, unit='step', dynamic_ncols=True)
