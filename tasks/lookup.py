"""Name lookup for registered tasks and mixtures, with a helpful error."""

import difflib

import seqio


def get_mixture_or_task(name: str) -> seqio.Task | seqio.Mixture:
  """Returns the registered mixture or task called `name`.

  Raises:
    ValueError: one line naming the unknown name, the closest registered names
      and the fix.
  """
  if name in seqio.MixtureRegistry.names():
    return seqio.MixtureRegistry.get(name)
  if name in seqio.TaskRegistry.names():
    return seqio.TaskRegistry.get(name)
  known = sorted(set(seqio.MixtureRegistry.names()) |
                 set(seqio.TaskRegistry.names()))
  close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
  hint = f'close matches: {", ".join(close)}' if close else 'no close matches'
  raise ValueError(
      f"Unknown task or mixture '{name}' ({hint}); pick a registered name "
      'after `import hyperprompt_jax.tasks`, e.g. synthetic_mixture, '
      'glue_mixture or super_glue_mixture.')
