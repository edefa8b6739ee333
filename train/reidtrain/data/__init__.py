"""Data loading: the shard dataset, model-ready rows (training and evaluation), augmentation, the PK sampler."""
