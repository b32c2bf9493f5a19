"""Task conditioning in plain NumPy, written from the equations.

HyperPrompt (He et al., 2022, section 3), Houlsby adapters (2019) and
HyperFormer++ (Karimi Mahabadi et al., 2021), one task and one layer at a
time, from parameter arrays named and laid out as the variants' docstrings
state. Vectors are rows and kernels `[in, out]`, as the parameters are
stored: the paper's `D P` is `P @ D` here. Everything is computed in float64.
"""

import numpy as np

# Where a layer applies adapters, in the order of the kernels' positions axis.
ADAPTER_POSITIONS = ('attention', 'mlp')


def relu(x: np.ndarray) -> np.ndarray:
  return np.maximum(x, 0.0)


def local_hypernet(global_prompt, down, up) -> np.ndarray:
  """`P = U relu(D P_tau)` of one task and layer.

  Global prompt `[l, d]`, `D [d, b]`, `U [b, n]` -> prompts `[l, n]`.
  """
  return relu(global_prompt @ down) @ up


def task_projection(embeddings, params) -> np.ndarray:
  """`I = W_2 relu(W_1 [e_1; ...; e_k] + b_1) + b_2` of one combination.

  Args:
    embeddings: the `[t]` embeddings, in concatenation order (task, layer,
      then position).
    params: `task_mlp_hidden_{kernel [k t, h], bias [h]}` and
      `task_mlp_out_{kernel [h, t], bias [t]}`.

  Returns:
    `[t]`.
  """
  joined = np.concatenate(embeddings)
  hidden = relu(joined @ params['task_mlp_hidden_kernel']
                + params['task_mlp_hidden_bias'])
  return hidden @ params['task_mlp_out_kernel'] + params['task_mlp_out_bias']


def generate(generator, projection) -> np.ndarray:
  """`reshape(W I)`: a kernel generated from `I [t]` by `generator [t, ...]`.

  `W` is the generator as a `[prod(...), t]` matrix; the result has the
  generator's trailing shape.
  """
  w = generator.reshape(generator.shape[0], -1).T
  return (w @ projection).reshape(generator.shape[1:])


def _as_float64(params):
  return {name: np.asarray(value, np.float64) for name, value in params.items()}


def layer_prompts(variant, params, num_layers, num_tasks, num_heads):
  """Every layer's and task's key and value prompts.

  Args:
    variant: 'share', 'sep', 'global' or 'direct'.
    params: the stack's generator parameters, by name.
    num_layers: M.
    num_tasks: T.
    num_heads: heads of the self-attention layers.

  Returns:
    `(keys, values)`, each `[M, T, l, heads, head_dim]`.
  """
  p = _as_float64(params)

  def prompt(kind, m, tau):
    """`[l, n]` prompts of task tau at layer m."""
    if variant == 'direct':
      return p[f'{kind}_prompts'][m, tau]
    if variant == 'share':
      down, up = p[f'{kind}_down'][m], p[f'{kind}_up'][m]
    elif variant == 'sep':
      down, up = p[f'{kind}_down'][m, tau], p[f'{kind}_up'][m, tau]
    elif variant == 'global':
      i = task_projection([p['task_embedding'][tau], p['layer_embedding'][m]],
                          p)
      down = generate(p[f'{kind}_down_generator'], i)
      up = generate(p[f'{kind}_up_generator'], i)
    else:
      raise ValueError(f'No layer prompts in variant {variant!r}.')
    return local_hypernet(p['global_prompts'][tau], down, up)

  keys, values = (
      np.array([[prompt(kind, m, tau) for tau in range(num_tasks)]
                for m in range(num_layers)])
      for kind in ('key', 'value'))
  shape = keys.shape[:-1] + (num_heads, -1)
  return keys.reshape(shape), values.reshape(shape)


def adapter_kernels(variant, params, num_layers, num_tasks):
  """Every layer's, position's and task's adapter kernels.

  Args:
    variant: 'adapter' (learned kernels) or 'hyperformer' (generated from
      `I[tau, m, p] = MLP([k_tau; z_m; p_p])` as `D = reshape(G_D I)`,
      `U = reshape(G_U I)`).
    params: the stack's adapter parameters, by name.
    num_layers: M.
    num_tasks: T.

  Returns:
    `(down [M, P, T, d, a], up [M, P, T, a, d])`.
  """
  p = _as_float64(params)

  def kernels(m, position, tau):
    """`(D [d, a], U [a, d])` of task tau at layer m and position."""
    if variant == 'adapter':
      return p['down'][m, position, tau], p['up'][m, position, tau]
    if variant == 'hyperformer':
      i = task_projection([p['task_embedding'][tau], p['layer_embedding'][m],
                           p['position_embedding'][position]], p)
      return generate(p['down_generator'], i), generate(p['up_generator'], i)
    raise ValueError(f'No adapters in variant {variant!r}.')

  lead = (num_layers, len(ADAPTER_POSITIONS), num_tasks)
  downs, ups = zip(*(kernels(*index) for index in np.ndindex(*lead)))
  return (np.reshape(downs, lead + downs[0].shape),
          np.reshape(ups, lead + ups[0].shape))


def adapter(x, down, up) -> np.ndarray:
  """`x + U relu(D x)` of one task's adapter: `[len, d]` -> `[len, d]`."""
  x = np.asarray(x, np.float64)
  return x + relu(x @ down) @ up


def input_prompt(embedding, tokens, prompts, task) -> np.ndarray:
  """`[P_tau; E x]`: the task's soft prompt before the embedded tokens.

  Args:
    embedding: token embedding table `[vocab, d]`.
    tokens: `[len]` token ids of one row.
    prompts: soft prompts `[T, l, d]`.
    task: the row's task.

  Returns:
    `[l + len, d]`.
  """
  return np.concatenate([np.asarray(prompts[task], np.float64),
                         np.asarray(embedding, np.float64)[tokens]])


def softmax(logits) -> np.ndarray:
  """Softmax over the last axis."""
  e = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def prompted_self_attention(x, kernels, mask, bias, prompt_key, prompt_value):
  """T5 self-attention of one row over `[P_K; K]` and `[P_V; V]`.

  T5 scales no logits (the scaling lives in the query kernel); the prompts
  get neither the mask nor the relative-position bias.

  Args:
    x: `[len, d]` the (normalised) input of the layer's attention.
    kernels: `query`, `key`, `value` `[d, heads * head_dim]` and `out`
      `[heads * head_dim, d]`.
    mask: `[len, len]`, True where a query may attend to a token.
    bias: `[heads, len, len]` relative-position bias.
    prompt_key: the layer's key prompts of the row's task `[l, heads,
      head_dim]`.
    prompt_value: its value prompts, same shape.

  Returns:
    `[len, d]`.
  """
  x = np.asarray(x, np.float64)
  num_heads, head_dim = prompt_key.shape[1:]
  q, k, v = (x @ np.asarray(kernels[name], np.float64)
             for name in ('query', 'key', 'value'))
  heads = []
  for h in range(num_heads):
    cols = slice(h * head_dim, (h + 1) * head_dim)
    token_logits = np.where(mask, q[:, cols] @ k[:, cols].T + bias[h], -np.inf)
    logits = np.concatenate([q[:, cols] @ prompt_key[:, h].T, token_logits],
                            axis=1)
    heads.append(softmax(logits) @ np.concatenate([prompt_value[:, h],
                                                   v[:, cols]]))
  return np.concatenate(heads, axis=1) @ np.asarray(kernels['out'], np.float64)
