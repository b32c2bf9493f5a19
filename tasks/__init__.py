"""seqio registrations of HyperPrompt-JAX, installed as `hyperprompt_jax.tasks`.

Importing this package registers `synthetic_mixture` (default, no download),
`glue_mixture` and `super_glue_mixture` and their tasks. Every task carries a
scalar int32 feature `task_id`, its index in its mixture.
`add_conditioned_mixture` does the same for seqio tasks registered elsewhere.
"""

from hyperprompt_jax.tasks import glue
from hyperprompt_jax.tasks import super_glue
from hyperprompt_jax.tasks import synthetic
from hyperprompt_jax.tasks.conditioned import add_conditioned_mixture
from hyperprompt_jax.tasks.lookup import get_mixture_or_task
from hyperprompt_jax.tasks.metrics import benchmark_average
from hyperprompt_jax.tasks.mixtures import mixing_rate
from hyperprompt_jax.tasks.sources import benchmark_source
from hyperprompt_jax.tasks.task_ids import add_task_id
from hyperprompt_jax.tasks.task_ids import load_task_id_map
from hyperprompt_jax.tasks.task_ids import num_tasks
from hyperprompt_jax.tasks.task_ids import save_task_id_map
from hyperprompt_jax.tasks.task_ids import task_id_map
from hyperprompt_jax.tasks.vocabularies import get_vocabulary

synthetic.register()
glue.register()
super_glue.register()
