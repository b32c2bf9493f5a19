"""HyperPrompt-JAX: HyperPrompt task conditioning for T5.1.1 in JAX/Flax."""
