"""Hyper-prompt generators: every layer's key/value prompts for every task."""

from flax import linen as nn
import jax.numpy as jnp

from hyperprompt_jax.conditioning import hypernetwork
from hyperprompt_jax.conditioning import hyperprompt_config as hp_config


class HyperPromptGenerator(nn.Module):
  """Makes the hyper-prompts of one stack (encoder or decoder).

  All layers and tasks are produced in one batched computation, so a forward
  pass (or a decoded sequence) computes them once.

  Parameters by variant (M layers, T tasks, l prompt length, d emb_dim,
  b bottleneck, t task_embed_dim, h task_mlp_dim, n heads * head_dim; the
  einsums below use the same letters), with their logical axes:
    share:  global_prompts [T, l, d] (tasks, prompt_length, embed);
            {key,value}_down [M, d, b] (layers, embed, prompt_bottleneck);
            {key,value}_up [M, b, n] (layers, prompt_bottleneck, joined_kv).
    sep:    global_prompts; {key,value}_down [M, T, d, b] and
            {key,value}_up [M, T, b, n] (with a `tasks` axis after `layers`).
    global: global_prompts; task_embedding [T, t] (tasks, task_embed);
            layer_embedding [M, t] (layers, task_embed);
            task_mlp_hidden kernel [2t, h] (task_embed, task_mlp), bias [h];
            task_mlp_out kernel [h, t] (task_mlp, task_embed), bias [t];
            {key,value}_down_generator [t, d, b]
            (task_embed, embed, prompt_bottleneck);
            {key,value}_up_generator [t, b, n]
            (task_embed, prompt_bottleneck, joined_kv).
    direct: {key,value}_prompts [M, T, l, n]
            (layers, tasks, prompt_length, joined_kv).
  `param_counts.conditioning_param_count` gives the closed forms.

  Attributes:
    config: the HyperPrompt configuration (a layer-prompt variant).
    num_layers: M, self-attention layers of the stack.
    num_heads: heads of those layers.
    head_dim: width of each head.
    emb_dim: d, the model width (width of global prompts).
    dtype: computation dtype.
  """

  config: hp_config.HyperPromptConfig
  num_layers: int
  num_heads: int
  head_dim: int
  emb_dim: int
  dtype: jnp.dtype = jnp.float32

  def _param(self, name, init, shape, axes):
    return hypernetwork.param(name, init, shape, axes, self.dtype)

  @nn.compact
  def __call__(self, deterministic: bool = True):
    """Returns `(keys, values)`, each `[layers, tasks, l, heads, head_dim]`."""
    cfg = self.config
    if cfg.variant == 'direct':
      keys, values = (
          self._param(f'{kind}_prompts', cfg.prompt_init,
                      (self.num_layers, cfg.num_tasks, cfg.prompt_length,
                       self.num_heads * self.head_dim),
                      ('layers', 'tasks', 'prompt_length', 'joined_kv'))
          for kind in ('key', 'value'))
    else:
      prompts = self._param(
          'global_prompts', cfg.prompt_init,
          (cfg.num_tasks, cfg.prompt_length, self.emb_dim),
          ('tasks', 'prompt_length', 'embed'))
      make = {'share': self._shared_hypernet, 'sep': self._separate_hypernet,
              'global': self._global_hypernet}[cfg.variant]()
      keys, values = (self._local_hypernet(prompts, *make(kind), deterministic)
                      for kind in ('key', 'value'))
    shape = keys.shape[:-1] + (self.num_heads, self.head_dim)
    return keys.reshape(shape), values.reshape(shape)

  def _local_hypernet(self, prompts, down, up, deterministic):
    """`U relu(D P_tau)` for every layer and task.

    Args:
      prompts: global prompts `[T, l, d]`.
      down: `(equation, operands...)` giving the bottleneck `[M, T, l, b]`
        from the prompts.
      up: `(equation, operands...)` taking the bottleneck to `[M, T, l, n]`.
      deterministic: disables dropout.

    Returns:
      `[M, T, l, n]`.
    """
    down_eq, *down_ops = down
    hidden = nn.relu(jnp.einsum(down_eq, prompts, *down_ops))
    hidden = nn.Dropout(self.config.dropout_rate)(hidden, deterministic)
    up_eq, *up_ops = up
    return jnp.einsum(up_eq, hidden, *up_ops)

  def _kernels(self, kind, lead_shape, lead_axes, name_suffix=''):
    cfg = self.config
    n = self.num_heads * self.head_dim
    down = self._param(f'{kind}_down{name_suffix}', cfg.kernel_init,
                       lead_shape + (self.emb_dim, cfg.bottleneck_dim),
                       lead_axes + ('embed', 'prompt_bottleneck'))
    up = self._param(f'{kind}_up{name_suffix}', cfg.kernel_init,
                     lead_shape + (cfg.bottleneck_dim, n),
                     lead_axes + ('prompt_bottleneck', 'joined_kv'))
    return down, up

  def _shared_hypernet(self):
    def make(kind):
      down, up = self._kernels(kind, (self.num_layers,), ('layers',))
      return ('Tld,Mdb->MTlb', down), ('MTlb,Mbn->MTln', up)
    return make

  def _separate_hypernet(self):
    def make(kind):
      down, up = self._kernels(kind, (self.num_layers, self.config.num_tasks),
                               ('layers', 'tasks'))
      return ('Tld,MTdb->MTlb', down), ('MTlb,MTbn->MTln', up)
    return make

  def _global_hypernet(self):
    embeddings = self._layer_aware_task_embeddings()
    def make(kind):
      down, up = self._kernels(kind, (self.config.task_embed_dim,),
                               ('task_embed',), name_suffix='_generator')
      # D and U of every (task, layer) are contracted on the fly rather than
      # materialised: einsum picks the cheapest order.
      return (('Tld,TMt,tdb->MTlb', embeddings, down),
              ('MTlb,TMt,tbn->MTln', embeddings, up))
    return make

  def _layer_aware_task_embeddings(self):
    """`I[tau, m] = MLP([k_tau; z_m])`, shape `[T, M, t]`."""
    cfg = self.config
    return hypernetwork.task_projection(
        (('task_embedding', cfg.num_tasks, 'tasks'),
         ('layer_embedding', self.num_layers, 'layers')),
        cfg.task_embed_dim, cfg.task_mlp_dim, cfg.embedding_init,
        cfg.kernel_init, self.dtype)

