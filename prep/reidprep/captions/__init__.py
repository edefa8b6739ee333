"""``reidprep captions``: confidence-aware attributes from MLLMs, merged across modalities, rendered as captions."""
