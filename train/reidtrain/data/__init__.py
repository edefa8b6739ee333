"""Data loading for training: the shard dataset and the PK sampler."""
