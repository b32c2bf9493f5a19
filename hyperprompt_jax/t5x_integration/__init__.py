"""The t5x side (imports t5x): a t5x model class over our network, and restore transformations for t5x checkpoints."""
