"""Input pipeline: the feature converter that carries task ids, datasets and host-to-device batches."""
