"""seqio registrations for HyperPrompt-JAX (installed as `hyperprompt_jax.tasks`)."""
