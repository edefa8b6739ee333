"""Models: CLIP backbones and ReID heads. Importing this package registers every model name (explicit imports)."""

from reidtrain.models import baseline as baseline  # registers "baseline"
from reidtrain.models import demo as demo  # registers "demo"
from reidtrain.models import dmpt as dmpt  # registers "dmpt"
from reidtrain.models import mambapro as mambapro  # registers "mambapro"
from reidtrain.models import next_model as next_model  # registers "next"
from reidtrain.models import stmi as stmi  # registers "stmi"
from reidtrain.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
