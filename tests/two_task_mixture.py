"""`synthetic_pair`: two of the synthetic tasks, registered on import with
`tasks.add_conditioned_mixture`. The tiny end-to-end runs train on it (their
gin file imports this module, also in the trainer's own processes): half the
input pipelines of the six-task mixture to build and evaluate."""

import seqio

from hyperprompt_jax import tasks
from hyperprompt_jax.tasks import conditioned

NAME = 'synthetic_pair'
TASKS = ('synthetic_reverse', 'synthetic_contains_seven')
REVERSE, CONTAINS_SEVEN = (conditioned.conditioned_task_name(NAME, t) for t in TASKS)

if NAME not in seqio.MixtureRegistry.names():
  tasks.add_conditioned_mixture(NAME, TASKS)
