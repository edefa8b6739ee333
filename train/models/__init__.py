"""Models: CLIP backbones and ReID heads. Importing this package registers every model name (explicit imports)."""

from reidtrain.models import baseline as baseline  # registers "baseline"
from reidtrain.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
