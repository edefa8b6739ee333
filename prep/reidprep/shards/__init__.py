"""``reidprep build-shards`` and ``validate-shards``: the Parquet shards the trainer reads."""
