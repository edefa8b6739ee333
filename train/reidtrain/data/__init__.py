"""Data loading: the shard dataset, rows as model-ready tensors (training and evaluation), augmentation, the PK sampler."""
