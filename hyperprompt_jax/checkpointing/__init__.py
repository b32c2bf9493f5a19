"""Orbax checkpoints with input-pipeline state, T5.1.1 checkpoint import and scanned/unscanned conversion."""
