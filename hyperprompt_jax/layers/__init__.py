"""T5.1.1 building blocks: projections, embeddings, RMS norm, gated MLP, masks, relative positions and attention (where prompt slots enter)."""
