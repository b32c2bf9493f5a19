"""The gin-configured training run: data, steps, checkpoints, eval, metrics.

`train(...)` is the root configurable of `python -m hyperprompt_jax.train`
(t5x's `train_script.train`); every argument is bound in gin/runs/*.gin.
"""

import functools
import os
import time
import uuid
from typing import Optional

import gin
import jax
import numpy as np
import tensorflow as tf
from jax.experimental import multihost_utils

from hyperprompt_jax.checkpointing import checkpoint_import
from hyperprompt_jax.checkpointing import checkpoints as checkpoints_lib
from hyperprompt_jax.checkpointing import iterator_checkpoint
from hyperprompt_jax.data import pipeline as data_lib
from hyperprompt_jax import errors
from hyperprompt_jax.sharding import mesh as mesh_lib
from hyperprompt_jax import tasks
from hyperprompt_jax.training import evaluation
from hyperprompt_jax.training import goodput as goodput_lib
from hyperprompt_jax.training import metric_writers
from hyperprompt_jax.training import optimizers
from hyperprompt_jax.training import preemption
from hyperprompt_jax.training import run_lock
from hyperprompt_jax.training import trainer as trainer_lib

TASK_IDS_FILE = 'task_ids.json'
CONFIG_FILE = 'config.gin'


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; nothing after it was saved."""


def _save_run_files(model_dir: str, mixture_or_task_name: str) -> None:
  """Writes the task-id map and gin config beside the checkpoints.

  A resumed run must use the same task ids as the checkpoint it continues.
  """
  mapping = tasks.task_id_map(mixture_or_task_name)
  path = os.path.join(model_dir, TASK_IDS_FILE)
  if tf.io.gfile.exists(path) and tasks.load_task_id_map(path) != mapping:
    raise ValueError(
        f'{path} holds other task ids than {mixture_or_task_name!r}: use a '
        'new MODEL_DIR for a different mixture')
  if jax.process_index() == 0:
    tasks.save_task_id_map(path, mapping)
    with tf.io.gfile.GFile(os.path.join(model_dir, CONFIG_FILE), 'w') as f:
      f.write(gin.config_str())


class MetricWindow:
  """The train steps since the last log: their metrics and their time.

  The clock starts when the window opens (after the previous window's saves
  and evaluations, so throughput counts training only) and stops when the
  steps' metrics arrive, i.e. when the steps completed, not when they were
  dispatched.
  """

  def __init__(self):
    self._steps: list[trainer_lib.Metrics] = []
    self._opened = time.time()

  def add(self, metrics: trainer_lib.Metrics) -> None:
    """Adds one step's metrics (device arrays; nothing waits for them)."""
    self._steps.append(metrics)

  def summary(self) -> dict[str, float]:
    """Each metric over the window (means weighted by their token counts;
    the last learning rate), and the window's throughput."""
    steps = jax.device_get(self._steps)
    seconds = time.time() - self._opened
    merged = functools.reduce(trainer_lib.merge_metrics, steps)
    summary = {name: float(metric.compute())
               for name, metric in merged.items()}
    summary['tokens_per_second'] = float(merged['loss'].count) / seconds
    summary['steps_per_second'] = len(steps) / seconds
    summary['step_time_seconds'] = seconds / len(steps)
    return summary


def _make_model_dir(model_dir: str) -> None:
  """Creates MODEL_DIR, or says in one line why it cannot."""
  try:
    tf.io.gfile.makedirs(model_dir)
    # A name of its own: every process of a multi-host run probes at once.
    probe = os.path.join(model_dir, f'.write_check-{uuid.uuid4().hex}')
    with tf.io.gfile.GFile(probe, 'w') as f:
      f.write('')
    tf.io.gfile.remove(probe)
  except (tf.errors.OpError, OSError) as e:
    raise ValueError(
        f'MODEL_DIR {model_dir} is not writable ({errors.first_line(e)}): '
        'choose a directory you can write to') from None


def _check_batch_size(batch_size: int, mesh) -> None:
  """Raises ValueError unless the global batch splits over the 'data' axis."""
  data = mesh.shape['data']
  if batch_size % data:
    raise ValueError(
        f'BATCH_SIZE={batch_size} is not divisible by the {data} devices of '
        f"the mesh's data axis (mesh {dict(mesh.shape)}): use a multiple of "
        f'{data}, or set DATA_MESH_SIZE / MODEL_MESH_SIZE')


def _hold_lock(model_dir: str) -> Optional[run_lock.RunLock]:
  """Takes MODEL_DIR's lock on process 0 (returned; None elsewhere).

  Raises:
    run_lock.RunLockedError: on every process, if another trainer holds it.
  """
  lock, error = None, None
  if jax.process_index() == 0:
    lock = run_lock.RunLock(model_dir)
    try:
      lock.acquire()
    except run_lock.RunLockedError as e:
      error = e
  if jax.process_count() > 1:
    refused = multihost_utils.broadcast_one_to_all(np.asarray(error is not None))
    if refused and error is None:
      error = run_lock.RunLockedError(
          f'MODEL_DIR {model_dir} is in use by another trainer (process 0 '
          'says which)')
  if error is not None:
    raise error
  return lock


def _due(step: int, period: Optional[int], total: int) -> bool:
  return step == total or bool(period) and step % period == 0


class _Run:
  """One run of `train`: set up, stepped through, finished.

  Attributes:
    trainer: the jitted steps.
    batches: the training data, checkpointed with the state.
    checkpointer: MODEL_DIR's checkpoints.
    state: the latest `TrainState`.
    writer, eval_writer: train and eval metric writers.
    goodput: where the run's wall time goes.
  """

  def __init__(self, model, train_dataset_cfg: data_lib.DatasetConfig,
               model_dir: str, initial_checkpoint_path: Optional[str],
               eval_dataset_cfg: Optional[data_lib.DatasetConfig],
               eval_num_examples: Optional[int], optimizer,
               schedule: optimizers.Schedule,
               mesh_config: mesh_lib.MeshConfig,
               trainer_config: trainer_lib.TrainerConfig,
               checkpoint_config: checkpoints_lib.CheckpointConfig):
    """Checks the settings, writes the run files and builds the trainer, the
    data and the state: resumed from MODEL_DIR, else fresh (with an imported
    backbone if given). Arguments as `train`'s."""
    self.goodput = goodput_lib.Goodput()
    self._model_dir = model_dir
    self._eval_dataset_cfg = eval_dataset_cfg
    self._eval_num_examples = eval_num_examples
    self._checkpoint_period = checkpoint_config.period
    self._evaluator = None  # built at the first evaluation

    tasks.get_mixture_or_task(train_dataset_cfg.mixture_or_task_name)
    mesh = mesh_config.make_mesh()
    _check_batch_size(train_dataset_cfg.batch_size, mesh)
    _make_model_dir(model_dir)
    self._lock = _hold_lock(model_dir)
    try:
      with self.goodput.timed('setup'):
        self._set_up(model, train_dataset_cfg, model_dir,
                     initial_checkpoint_path, optimizer, schedule, mesh,
                     trainer_config, checkpoint_config)
    except BaseException:
      self.release()
      raise

  def _set_up(self, model, train_dataset_cfg, model_dir,
              initial_checkpoint_path, optimizer, schedule, mesh,
              trainer_config, checkpoint_config) -> None:
    """Writes the run files and builds the trainer, the data and the state
    (`__init__`'s arguments, the lock held)."""
    _save_run_files(model_dir, train_dataset_cfg.mixture_or_task_name)

    converter = model.feature_converter_cls(pack=train_dataset_cfg.pack)
    input_shapes = converter.batch_shapes(
        train_dataset_cfg.task_feature_lengths, train_dataset_cfg.batch_size)
    self.trainer = trainer_lib.Trainer(model, optimizer, schedule, mesh,
                                       input_shapes, trainer_config)

    hyperprompt = model.module.hyperprompt
    conditioned = hyperprompt.variant != 'none'
    self.batches = data_lib.training_batches(
        train_dataset_cfg, model.feature_converter_cls,
        self.trainer.batch_sharding,
        num_tasks=hyperprompt.num_tasks if conditioned else None,
        one_task_per_row=hyperprompt.one_task_per_row)
    iterator_checkpoint.check_saveable(self.batches.iterator)
    self.checkpointer = checkpoints_lib.Checkpointer(model_dir,
                                                     checkpoint_config)
    self.state = self.checkpointer.restore_latest_readable(
        self.trainer.abstract_state, self.batches)
    if self.state is not None:
      print(f'Resumed from step {int(self.state.step)} in '
            f'{self.checkpointer.directory}')
    else:
      self.state = self.trainer.init_state()
      if initial_checkpoint_path:
        self.state = self.state.replace(
            params=checkpoint_import.restore_pretrained(
                self.state.params, initial_checkpoint_path))
        print(f'Backbone restored from {initial_checkpoint_path}; '
              'task-conditioning parameters start fresh')

    self.writer = metric_writers.create_writer(model_dir, 'train')
    self.eval_writer = metric_writers.create_writer(model_dir, 'eval')

  def release(self) -> None:
    """Gives MODEL_DIR's lock back (process 0)."""
    if self._lock is not None:
      self._lock.release()

  def evaluate(self, step: int) -> evaluation.Results:
    """Evaluates the current params and writes the per-task metrics."""
    if self._evaluator is None:
      cfg = self._eval_dataset_cfg
      self._evaluator = evaluation.Evaluator(
          self.trainer, cfg.mixture_or_task_name, cfg.task_feature_lengths,
          cfg.split, cfg.batch_size, self._eval_num_examples)
    results = self._evaluator.evaluate(self.state.params, step)
    self.eval_writer.write_scalars(
        step, {f'{task}/{k}': v for task, metrics in results.items()
               for k, v in metrics.items()})
    return results

  def log(self, step: int, window: MetricWindow) -> None:
    """Writes the window's summary; raises NonFiniteLossError on a NaN or
    infinite loss (before anything of this step is saved)."""
    with self.goodput.timed('train_step'):  # Waits for the window's steps.
      summary = window.summary()
    if not np.isfinite(summary['loss']):
      raise NonFiniteLossError(
          f"loss is {summary['loss']} by step {step}; stopped without "
          f'saving (last checkpoint: step {self.checkpointer.latest_step()}): '
          'lower the learning rate or check the data')
    summary.update(self.goodput.window())
    with self.goodput.timed('other'):
      self.writer.write_scalars(step, summary)

  def _wait_for_steps(self) -> None:
    """Waits for the dispatched steps, so that the device time they take is
    counted as training, not as the save or evaluation that follows."""
    with self.goodput.timed('train_step'):
      jax.block_until_ready(self.state)

  def report_goodput(self) -> None:
    """Writes the run's goodput and badput parts (console and TensorBoard)."""
    self.writer.write_scalars(int(self.state.step), {
        f'run/{k}': v for k, v in self.goodput.total().items()})
    if jax.process_index() == 0:
      print(self.goodput.summary_line(), flush=True)

  def _step(self, first: bool) -> trainer_lib.Metrics:
    """Reads a batch and dispatches one train step; returns its metrics.

    Timed for goodput: the process's first step (waited for) as compile,
    the others as train steps, the wait for a batch as input unless the
    previous step was still running meanwhile.
    """
    with self.goodput.timed('input') as timing:
      batch = next(self.batches)
      if not first and not self.state.step.is_ready():
        timing.part = 'train_step'  # The wait hid behind the last step.
    with self.goodput.timed('compile' if first else 'train_step'):
      self.state, metrics = self.trainer.train_step(self.state, batch)
      if first:
        jax.block_until_ready(self.state)
    return metrics

  def loop(self, total_steps: int, log_period: int,
           eval_period: Optional[int]) -> None:
    """Trains up to `total_steps`: logs, saves and evaluates when due.

    Raises:
      preemption.Preempted: after saving the step at which SIGTERM, Ctrl-C
        or JAX's preemption sync point stopped the run.
    """
    bar = metric_writers.progress_bar(int(self.state.step), total_steps)
    # Saves and evaluations fall between windows, so throughput counts
    # training only.
    window = MetricWindow()
    first_step = int(self.state.step) + 1
    with preemption.Watcher(self.checkpointer.reached_preemption) as watcher:
      for step in range(first_step, total_steps + 1):
        window.add(self._step(first=step == first_step))
        if bar:
          bar.update()
        save_due = _due(step, self._checkpoint_period, total_steps)
        eval_due = self._eval_dataset_cfg is not None and eval_period and (
            step % eval_period == 0 and step != total_steps)
        preempted = watcher.reached(step)
        log_due = (_due(step, log_period, total_steps) or save_due or
                   eval_due or preempted)
        if log_due:
          self.log(step, window)
        if save_due or preempted:
          self._wait_for_steps()
          with self.goodput.timed('checkpoint'):
            self.checkpointer.save(self.state, self.batches,
                                   force=step == total_steps or preempted)
        if preempted:
          with self.goodput.timed('checkpoint'):
            self.checkpointer.wait_until_finished()
          if bar:
            bar.close()
          self.report_goodput()
          raise preemption.Preempted(
              f'{watcher.cause} at step {step}: saved '
              f'{self.checkpointer.directory / str(step)}; run the same '
              f'command again to resume (exit code {watcher.exit_code})',
              watcher.exit_code)
        if eval_due:
          self._wait_for_steps()
          with self.goodput.timed('evaluation'):
            self.evaluate(step)
        if log_due:
          window = MetricWindow()
    if bar:
      bar.close()

  def finish(self) -> evaluation.Results:
    """Waits for the last save, then evaluates the final params (if there is
    eval data) and writes MODEL_DIR/eval_results.json; reports goodput."""
    with self.goodput.timed('checkpoint'):
      self.checkpointer.wait_until_finished()
      self.checkpointer.close()
    results = {}
    if self._eval_dataset_cfg is not None:
      step = int(self.state.step)
      with self.goodput.timed('evaluation'):
        results = self.evaluate(step)
      self.eval_writer.flush()
      if jax.process_index() == 0:
        path = evaluation.write_results(self._model_dir, step, results)
        print(f'Per-task results at step {step} ({path}):')
        print(evaluation.format_table(results))
    self.report_goodput()
    self.writer.flush()
    return results


def train(*,
          model,
          train_dataset_cfg: data_lib.DatasetConfig,
          model_dir: str,
          total_steps: int,
          initial_checkpoint_path: Optional[str] = None,
          eval_dataset_cfg: Optional[data_lib.DatasetConfig] = None,
          optimizer=optimizers.Adafactor(),
          schedule: optimizers.Schedule = optimizers.Schedule(),
          mesh_config: mesh_lib.MeshConfig = mesh_lib.MeshConfig(),
          trainer_config: trainer_lib.TrainerConfig = trainer_lib.TrainerConfig(),
          checkpoint_config: checkpoints_lib.CheckpointConfig = (
              checkpoints_lib.CheckpointConfig()),
          eval_period: Optional[int] = None,
          eval_num_examples: Optional[int] = None,
          log_period: int = 100) -> evaluation.Results:
  """Trains (resuming from MODEL_DIR's latest checkpoint), then evaluates.

  Args:
    model: an `EncoderDecoderModel`.
    train_dataset_cfg: training data; its batch_size is the global batch.
    model_dir: checkpoints, TensorBoard files, task ids, config, eval results.
    total_steps: train until the state's step reaches this.
    initial_checkpoint_path: a T5.1.1 checkpoint (t5x directory, or HF
      safetensors file or directory) whose backbone starts a new run; the
      task-conditioning parameters start fresh. Ignored when resuming.
    eval_dataset_cfg: per-task evaluation data (its split, e.g.
      'validation'); None skips evaluation.
    optimizer: `optimizers.Adafactor()` or `optimizers.AdamW()`.
    schedule: learning-rate schedule.
    mesh_config: the ('data', 'model') mesh shape.
    trainer_config: tuning mode, microbatches, seed.
    checkpoint_config: checkpoint period and how many to keep.
    eval_period: evaluate every this many steps (and always at the end).
    eval_num_examples: cap on examples per task for evaluation.
    log_period: write train metrics every this many steps.

  Returns:
    The final per-task results, also in MODEL_DIR/eval_results.json.

  Raises:
    preemption.Preempted: SIGTERM, Ctrl-C or JAX's preemption sync point
      stopped the run; the step it stopped at is saved.
    KeyboardInterrupt: a second Ctrl-C stopped the run at once.
  """
  run = _Run(model, train_dataset_cfg, model_dir, initial_checkpoint_path,
             eval_dataset_cfg, eval_num_examples, optimizer, schedule,
             mesh_config, trainer_config, checkpoint_config)
  try:
    run.loop(total_steps, log_period, eval_period)
    return run.finish()
  finally:
    run.release()
