"""The project's one model registry: names -> builders, filled by explicit imports in ``reidtrain.models``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

__all__ = ["create_model", "list_models", "register_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(name: str) -> Callable[[F], F]:
    """Decorator: register a model class or builder under ``name`` (a second registration of the name fails)."""

    def decorator(builder: F) -> F:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered (by {_MODELS[name]!r})")
        _MODELS[name] = builder
        return builder

    return decorator


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build the model registered as ``name`` with ``kwargs``; an unknown name lists the registered ones."""
    try:
        builder = _MODELS[name]
    except KeyError:
        choices = ", ".join(sorted(_MODELS)) or "(none)"
        raise ValueError(f"unknown model {name!r}; registered models: {choices}") from None
    return builder(**kwargs)


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_MODELS)
