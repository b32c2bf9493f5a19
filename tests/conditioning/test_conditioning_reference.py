"""Every variant's prompts, adapters and input prompts equal a NumPy
reference written from the equations (`conditioning_reference`), and every
layer gets its own."""

import inspect
from typing import Any, NamedTuple

from flax import linen as nn
import jax
import numpy as np
import pytest

from hyperprompt_jax.conditioning import adapter
from hyperprompt_jax.conditioning import adapter_generator
from hyperprompt_jax.conditioning import input_prompt
from hyperprompt_jax.conditioning import prompt_generator
from hyperprompt_jax.layers import attention
from hyperprompt_jax.model import network
import conditioning_reference as ref
import tiny_models as tm

STACKS = ('encoder', 'decoder')
# Tasks of the batch's two rows: distinct, and not the rows' own indices.
ROW_TASKS = (2, 0)
# float32 against float64: values read off the parameters, and layer outputs
# (longer sums).
TOLERANCE = dict(rtol=1e-5, atol=1e-6)
LAYER_TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def _random_params(module, seed=0):
  """Parameters of `module` (for `tm.unpacked_batch` shapes) drawn from
  N(0, 1/4), without compiling its init: zero-initialised biases and
  near-zero adapter up-projections would hide a missing term."""
  rng = np.random.RandomState(seed)
  return jax.tree.map(
      lambda x: (0.5 * rng.standard_normal(x.shape)).astype(np.float32),
      tm.variable_shapes(module)['params'])


def _num_layers(stack):
  cfg = tm.t5_config()
  return {'encoder': cfg.num_encoder_layers,
          'decoder': cfg.num_decoder_layers}[stack]


def _layer_params(stack_params, m, scanned):
  """Layer m's parameters in an unrolled or a scanned stack."""
  if scanned:
    return jax.tree.map(lambda x: x[m], stack_params['layers'])
  return stack_params[f'layers_{m}']


@pytest.mark.parametrize('variant', tm.LAYER_PROMPT_VARIANTS)
def test_layer_prompts_equal_the_reference(variant):
  """`HyperPromptGenerator` of both stacks equals `ref.layer_prompts`.

  Compared per layer and per task, with random biases and embeddings.
  Catches a missing ReLU in the local HyperNetwork, `[z_m; k_tau]` for
  `[k_tau; z_m]`, a missing MLP bias or ReLU in `I`, keys swapped with values,
  and layers or tasks mixed up.
  """
  cfg, hp = tm.t5_config(), tm.hp_config(variant)
  params = _random_params(tm.transformer(variant))
  for stack in STACKS:
    stack_params = params[stack]['hyperprompt']
    generator = prompt_generator.HyperPromptGenerator(
        config=hp, num_layers=_num_layers(stack), num_heads=cfg.num_heads,
        head_dim=cfg.head_dim, emb_dim=cfg.emb_dim)
    got = generator.apply({'params': stack_params})
    expected = ref.layer_prompts(variant, stack_params, _num_layers(stack),
                                 hp.num_tasks, cfg.num_heads)
    for kind, g, e in zip(('key', 'value'), got, expected):
      assert g.shape == e.shape
      for m in range(_num_layers(stack)):
        for tau in range(hp.num_tasks):
          np.testing.assert_allclose(
              g[m, tau], e[m, tau], **TOLERANCE,
              err_msg=f'{stack} {kind} prompts, layer {m}, task {tau}')


@pytest.mark.parametrize('variant', tm.ADAPTER_VARIANTS)
def test_adapter_kernels_equal_the_reference(variant):
  """`AdapterGenerator` of both stacks equals `ref.adapter_kernels`.

  Compared per layer, position and task, with random biases and embeddings.
  Catches, for `hyperformer`, a reordered `[k_tau; z_m; p_p]`, a missing MLP
  bias or ReLU in `I`, and layers, positions or tasks mixed up; for
  `adapter`, learned kernels handed on in another layout (layers and
  positions swapped).
  """
  cfg, hp = tm.t5_config(), tm.hp_config(variant)
  params = _random_params(tm.transformer(variant))
  for stack in STACKS:
    stack_params = params[stack]['adapters']
    got = adapter_generator.AdapterGenerator(
        config=hp, num_layers=_num_layers(stack),
        emb_dim=cfg.emb_dim).apply({'params': stack_params})
    expected = ref.adapter_kernels(variant, stack_params, _num_layers(stack),
                                   hp.num_tasks)
    for name, g, e in zip(('down', 'up'), (got.down, got.up), expected):
      assert g.shape == e.shape
      for m, position, tau in np.ndindex(*e.shape[:3]):
        np.testing.assert_allclose(
            g[m, position, tau], e[m, position, tau], **TOLERANCE,
            err_msg=f'{stack} {name}, layer {m}, position {position}, '
            f'task {tau}')


class _Call(NamedTuple):
  """One call of a module during a forward pass, as NumPy values."""
  path: str
  arguments: dict[str, Any]
  output: np.ndarray


def _calls(module, params, batch, cls) -> list[_Call]:
  """Every call of a `cls` module in a teacher-forced pass, in call order.

  Layers of a scanned stack share one path; their calls come in layer order.
  """
  calls, signature = [], inspect.signature(cls.__call__)

  def interceptor(next_fun, args, kwargs, context):
    output = next_fun(*args, **kwargs)
    if isinstance(context.module, cls) and context.method_name == '__call__':
      arguments = {
          name: value for name, value in signature.bind(
              context.module, *args, **kwargs).arguments.items()
          if name != 'self' and not isinstance(value, (bool, str))}
      path = '/'.join(context.module.scope.path)
      # A callback sees the values of every iteration of a scanned stack.
      jax.debug.callback(
          lambda arguments, output: calls.append(_Call(
              path, jax.tree.map(np.asarray, arguments), np.asarray(output))),
          arguments, output, ordered=True)
    return output

  def forward(params, features):
    with nn.intercept_methods(interceptor):
      return module.apply({'params': params}, **features,
                          enable_dropout=False)

  jax.block_until_ready(jax.jit(forward)(
      params, {k: np.asarray(v) for k, v in batch.items()}))
  return calls


def _layer_calls(calls, stack, name):
  """The calls of module `name` in each layer of `stack`, in layer order."""
  return [c for c in calls
          if c.path.startswith(f'{stack}/') and c.path.endswith(f'/{name}')]


def _network(variant, scanned):
  """A tiny network, its batch and random params."""
  module = network.Transformer(tm.t5_config(scan_layers=scanned),
                               tm.hp_config(variant))
  return module, tm.unpacked_batch(task_ids=ROW_TASKS), _random_params(module)


@pytest.mark.parametrize('scanned', [False, True], ids=['unrolled', 'scanned'])
def test_each_layer_attends_to_its_own_prompts(scanned):
  """Self-attention of layer m attends over `[P_K^m; K]`, `[P_V^m; V]` of
  each row's task.

  Each layer's attention output is recomputed in NumPy from its input, mask
  and bias, layer m's kernels and `ref.layer_prompts` of layer m. Catches
  prompts handed to the wrong layer (a reversed or shifted layer index, or
  layer 0's for all), to the wrong row's task, or keys swapped with values.
  """
  module, batch, params = _network('global', scanned)
  calls = _calls(module, params, batch, attention.MultiHeadDotProductAttention)
  for stack, name in (('encoder', 'attention'), ('decoder', 'self_attention')):
    keys, values = ref.layer_prompts(
        'global', params[stack]['hyperprompt'], _num_layers(stack),
        tm.NUM_TASKS, module.config.num_heads)
    layer_calls = _layer_calls(calls, stack, name)
    assert len(layer_calls) == _num_layers(stack)
    for m, call in enumerate(layer_calls):
      kernels = {k: v['kernel'] for k, v in
                 _layer_params(params[stack], m, scanned)[name].items()}
      args = call.arguments
      for row, task in enumerate(ROW_TASKS):
        expected = ref.prompted_self_attention(
            args['inputs_q'][row], kernels, args['mask'][row, 0] > 0,
            args['bias'][0], keys[m, task], values[m, task])
        np.testing.assert_allclose(
            call.output[row], expected, **LAYER_TOLERANCE,
            err_msg=f'{stack} layer {m}, row {row} (task {task})')


@pytest.mark.parametrize('scanned', [False, True], ids=['unrolled', 'scanned'])
def test_each_adapter_applies_its_own_layer_and_position_kernels(scanned):
  """Each `hyperformer` adapter maps its block's output `x` to
  `x + U relu(D x)` with `ref.adapter_kernels` of its layer, position and
  row's task.

  Catches adapters handed the kernels of another layer, position or task,
  and a missing ReLU or residual in the adapter.
  """
  module, batch, params = _network('hyperformer', scanned)
  calls = _calls(module, params, batch, adapter.TaskAdapter)
  for stack in STACKS:
    down, up = ref.adapter_kernels('hyperformer', params[stack]['adapters'],
                                   _num_layers(stack), tm.NUM_TASKS)
    for p, position in enumerate(ref.ADAPTER_POSITIONS):
      layer_calls = _layer_calls(calls, stack, f'{position}_adapter')
      assert len(layer_calls) == _num_layers(stack)
      for m, call in enumerate(layer_calls):
        for row, task in enumerate(ROW_TASKS):
          np.testing.assert_allclose(
              call.output[row],
              ref.adapter(call.arguments['x'][row], down[m, p, task],
                          up[m, p, task]), **LAYER_TOLERANCE,
              err_msg=f'{stack} layer {m}, {position}, row {row}')


def test_prompt_tuning_prepends_each_rows_task_prompt():
  """The encoder's embedded input is `[P_tau; E x]` with each row's task.

  Catches another row's or task's prompt, prompts appended after the
  tokens, or tokens embedded wrongly.
  """
  module, batch, params = _network('prompt_tuning', scanned=False)
  calls = _calls(module, params, batch, input_prompt.InputPrompt)
  assert [c.path for c in calls] == ['encoder/input_prompt']
  for row, task in enumerate(ROW_TASKS):
    np.testing.assert_allclose(
        calls[0].output[row],
        ref.input_prompt(params['token_embedder']['embedding'],
                         batch['encoder_input_tokens'][row],
                         params['encoder']['input_prompt']['prompts'], task),
        **TOLERANCE, err_msg=f'row {row} (task {task})')
