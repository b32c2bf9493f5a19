"""Every gin file under gin/ parses and binds (t5x files only where t5x is)."""

import pathlib
import sys

import gin
import pytest

from hyperprompt_jax import gin_utils
from hyperprompt_jax.model import encoder_decoder as model_lib
from hyperprompt_jax.model import network

GIN_DIR = pathlib.Path(__file__).resolve().parents[1] / 'gin'
SIZES = ('tiny', 'small', 'base', 'large', 'xl', 'xxl')
BENCH_SIZES = ('d256',)  # models/ only: the benchmark's mid-size network
VARIANTS = ('none', 'share', 'sep', 'global', 'direct', 'prompt_tuning',
            'adapter', 'hyperformer')
# T5.1.1 (emb_dim, num_heads, layers, mlp_dim) of the public checkpoints, as in
# t5x/examples/t5/t5_1_1/<size>.gin; head_dim is 64 for all of them.
PUBLIC_SIZES = {'small': (512, 6, 8, 1024), 'base': (768, 12, 12, 2048),
                'large': (1024, 16, 24, 2816), 'xl': (2048, 32, 24, 5120),
                'xxl': (4096, 64, 24, 10240)}
T5X_RUNS = ('glue_finetune', 'super_glue_finetune')
FINETUNE_RUNS = {'glue_finetune': 'glue_mixture',
                 'super_glue_finetune': 'super_glue_mixture'}
# Included by the runs above and the synthetic runs; not runs by themselves.
SHARED_RUN_FILES = ('runs/base.gin', 'runs/finetune.gin')


def _gin_files(pattern):
  return sorted(str(p.relative_to(GIN_DIR)) for p in GIN_DIR.glob(pattern))


def _parse(files, bindings=()):
  gin.clear_config(clear_constants=True)
  gin.add_config_file_search_path(str(GIN_DIR))
  # Unlocked: binding may import modules that register more configurables.
  gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)


@pytest.fixture(autouse=True)
def _clean_gin():
  yield
  gin.clear_config(clear_constants=True)


def _transformer() -> network.Transformer:
  return gin.get_configurable(network.Transformer)()


@pytest.mark.parametrize('size', SIZES + BENCH_SIZES)
@pytest.mark.parametrize('variant', VARIANTS)
def test_model_and_variant_files_bind_a_network(size, variant):
  _parse([f'variants/{variant}.gin', f'models/t5_1_1_{size}.gin'],
         ['NUM_TASKS = 3'])
  module = _transformer()
  assert module.hyperprompt.variant == variant
  assert module.hyperprompt.num_tasks == 3
  cfg = module.config
  if size in PUBLIC_SIZES:  # Else the public checkpoint would not restore.
    assert (cfg.emb_dim, cfg.num_heads, cfg.num_encoder_layers,
            cfg.mlp_dim) == PUBLIC_SIZES[size]
    assert (cfg.num_decoder_layers, cfg.head_dim, cfg.vocab_size) == (
        cfg.num_encoder_layers, 64, 32128)
    assert tuple(cfg.mlp_activations) == ('gelu', 'linear')


@pytest.mark.parametrize('run', [
    r for r in _gin_files('runs/synthetic_*.gin')])
def test_standalone_run_files_bind_a_model(run):
  _parse([run], ["MODEL_DIR = '/tmp/unused'"])
  model = gin.get_configurable(model_lib.EncoderDecoderModel)()
  assert isinstance(model.module, network.Transformer)
  named = [v for v in VARIANTS if f'_{v}_' in run]  # runs/<data>_<variant>_...
  if named:  # Else a base file that the variant runs include.
    assert model.module.hyperprompt.variant == named[-1]
    assert model.module.hyperprompt.num_tasks >= 2


@pytest.mark.parametrize('variant', ['global', 'prompt_tuning'])
@pytest.mark.parametrize('run', sorted(FINETUNE_RUNS))
def test_standalone_finetune_runs_bind(run, variant):
  from hyperprompt_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  _parse(['models/t5_1_1_base.gin', f'variants/{variant}.gin',
          f'runs/{run}.gin'], ["MODEL_DIR = '/tmp/unused'"])
  model = gin.get_configurable(model_lib.EncoderDecoderModel)()
  assert model.module.config.emb_dim == 768
  assert model.module.hyperprompt.variant == variant
  with gin.config_scope('train'):
    train_data = gin.get_configurable(pipeline.DatasetConfig)()
  assert train_data.mixture_or_task_name == FINETUNE_RUNS[run]
  # Prompt tuning prepends prompts to whole rows, so its runs are unpacked.
  assert train_data.pack == (variant != 'prompt_tuning')
  gin.parse_config('gin_files_test_probe.value = %INITIAL_CHECKPOINT_PATH')
  assert _probe() == (
      'gs://t5-data/pretrained_models/t5x/t5_1_1_base/checkpoint_1000000')


@gin.configurable('gin_files_test_probe')
def _probe(value=None):
  """Resolves a macro bound to `value` (gin hands macros over unresolved)."""
  return value


def test_every_gin_file_is_covered():
  covered = {*(f'models/t5_1_1_{s}.gin' for s in SIZES + BENCH_SIZES),
             *(f'variants/{v}.gin' for v in VARIANTS),
             'variants/hyperprompt.gin',  # Included by every variant.
             *_gin_files('runs/synthetic_*.gin'), *SHARED_RUN_FILES,
             *(f'runs/{r}.gin' for r in FINETUNE_RUNS),
             *(f't5x/models/t5_1_1_{s}.gin' for s in SIZES),
             *(f't5x/runs/{r}.gin' for r in T5X_RUNS),
             't5x/model.gin', 't5x/runs/finetune.gin',  # Included by those.
             't5x/runs/hyperprompt.gin', 't5x/runs/synthetic_tiny.gin',
             # Run by tests/test_t5x_train.py (t5x.eval, t5x.infer, frozen).
             't5x/synthetic_tiny_data.gin', 't5x/runs/infer.gin',
             't5x/runs/synthetic_tiny_eval.gin',
             't5x/runs/synthetic_tiny_infer.gin', 't5x/tune_conditioning.gin',
             # TPU runs, by tests/test_plan.py.
             *_gin_files('tpu/*.gin')}
  assert set(_gin_files('**/*.gin')) <= covered


def _parse_t5x(files, monkeypatch, bindings=()):
  """Parses like `python -m t5x.train`, whose gin files bind `__main__.train`."""
  from t5x import gin_utils  # pylint: disable=g-import-not-at-top
  from t5x import train  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(sys.modules['__main__'], 'train', train.train,
                      raising=False)
  gin.clear_config(clear_constants=True)
  gin_utils.parse_gin_flags([str(GIN_DIR), *train._DEFAULT_GIN_SEARCH_PATHS],  # pylint: disable=protected-access
                            files, list(bindings), finalize_config=False)


@pytest.mark.t5x
@pytest.mark.parametrize('run', T5X_RUNS)
@pytest.mark.parametrize('size', sorted(PUBLIC_SIZES))
def test_t5x_finetune_runs_bind(monkeypatch, run, size):
  from t5x import partitioning as t5x_partitioning  # pylint: disable=g-import-not-at-top
  from t5x import utils  # pylint: disable=g-import-not-at-top
  from hyperprompt_jax.t5x_integration import model as t5x_model  # pylint: disable=g-import-not-at-top
  from hyperprompt_jax.t5x_integration import restore as t5x_restore  # pylint: disable=g-import-not-at-top
  _parse_t5x(['variants/global.gin', f't5x/models/t5_1_1_{size}.gin',
              f't5x/runs/{run}.gin'], monkeypatch,
             ["MODEL_DIR = '/tmp/unused'"])
  model = gin.get_configurable(t5x_model.HyperPromptEncoderDecoderModel)()
  assert model.module.hyperprompt.variant == 'global'
  assert model.module.config.emb_dim == PUBLIC_SIZES[size][0]
  assert model.FEATURE_CONVERTER_CLS.__name__ == (
      'HyperPromptEncDecFeatureConverter')
  restore = gin.get_configurable(utils.RestoreCheckpointConfig)()
  assert restore.path == ('gs://t5-data/pretrained_models/t5x/'
                          f't5_1_1_{size}/checkpoint_1000000')
  assert restore.fallback_to_scratch
  # (gin hands over its registered wrapper of the function.)
  assert [f.__name__ for f in restore.state_transformation_fns] == [
      t5x_restore.check_backbone_restored.__name__]
  rules = dict(gin.get_configurable(
      t5x_partitioning.standard_logical_axis_rules)())
  assert rules['tasks'] is None and rules['mlp'] == 'model'


@pytest.mark.t5x
def test_t5x_initial_checkpoint_path_overrides_the_public_one(monkeypatch):
  from t5x import utils  # pylint: disable=g-import-not-at-top
  _parse_t5x(['variants/none.gin', 't5x/models/t5_1_1_base.gin',
              't5x/runs/glue_finetune.gin'], monkeypatch,
             ["MODEL_DIR = '/tmp/unused'",
              "INITIAL_CHECKPOINT_PATH = '/ckpts/t5_1_1_base'"])
  assert gin.get_configurable(utils.RestoreCheckpointConfig)().path == (
      '/ckpts/t5_1_1_base')


def test_a_later_parse_searches_its_own_paths_first(tmp_path):
  """Two runs in one process, the second overriding an included model file:
  the paths an earlier parse added must not shadow the later parse's."""
  override = tmp_path / 'models'
  override.mkdir()
  (override / 't5_1_1_tiny.gin').write_text(
      (GIN_DIR / 'models' / 't5_1_1_tiny.gin').read_text() +
      '\nnetwork.T5Config.emb_dim = 16\n')
  run = ['runs/synthetic_tiny_base.gin']
  gin_utils.parse_gin(run, ["MODEL_DIR = '/tmp/unused'"])
  default = _transformer().config.emb_dim
  gin.clear_config()
  gin_utils.parse_gin(run, ["MODEL_DIR = '/tmp/unused'"], [str(tmp_path)])
  assert (default, _transformer().config.emb_dim) == (64, 16)
