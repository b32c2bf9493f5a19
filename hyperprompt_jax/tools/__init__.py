"""Benchmarks, pod plans, the variant comparison and the Cloud TPU launcher; each runs as `python -m hyperprompt_jax.<name>`."""
