"""The project's one model registry: names -> builders, filled by explicit imports in ``reidtrain.models``."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError
from torch import nn

__all__ = ["TRAINER_ARGUMENTS", "check_model_options", "create_model", "list_models", "model_options", "register_model"]

# Builder keywords the trainer passes itself (from the recipe's backbone and image_size, the shards and the run
# settings); every other keyword of a builder is a model option (a recipe's ``model_options``).
TRAINER_ARGUMENTS = ("num_classes", "num_cameras", "backbone", "image_size", "weights", "require_pretrained")

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


def _builder(name: str) -> Callable[..., nn.Module]:
    try:
        return _MODELS[name]
    except KeyError:
        choices = ", ".join(sorted(_MODELS)) or "(none)"
        raise ValueError(f"unknown model {name!r}; registered models: {choices}") from None


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build the model registered as ``name`` with ``kwargs``; an unknown name lists the registered ones."""
    return _builder(name)(**kwargs)


def model_options(name: str) -> dict[str, inspect.Parameter] | None:
    """The model options of ``name``: its builder's keyword parameters minus ``TRAINER_ARGUMENTS``, in order.

    None when the builder takes ``**kwargs`` (any key is accepted then).
    """
    builder = _builder(name)
    params = inspect.signature(builder).parameters  # a class: its __init__ without self
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {k: p for k, p in params.items() if p.kind in keyword and k not in TRAINER_ARGUMENTS}


def _annotations(builder: Callable[..., nn.Module]) -> dict[str, Any]:
    target = builder.__init__ if inspect.isclass(builder) else builder
    try:
        return typing.get_type_hints(target)
    except Exception:  # an annotation that does not resolve at run time: check keys only
        return {}


def check_model_options(name: str, options: Mapping[str, Any], what: str = "model_options") -> None:
    """Raise ``ValueError`` (one line naming the key) when ``options`` are not keyword options of model ``name``.

    Keys must be builder parameters (not ``TRAINER_ARGUMENTS``); values are checked against the parameter's type
    annotation (pydantic, lax mode: a YAML list passes for a tuple). Nothing is built.
    """
    valid = model_options(name)
    if valid is None:
        return
    unknown = [key for key in options if key not in valid]
    if unknown:
        keys = ", ".join(f"{what}.{key}" for key in unknown)
        verb = "not an option" if len(unknown) == 1 else "not options"
        trainer = [key for key in unknown if key in TRAINER_ARGUMENTS]
        hint = f" ({', '.join(trainer)}: set by the trainer from the recipe)" if trainer else ""
        raise ValueError(f"{keys}: {verb} of {name}{hint}; valid: {', '.join(valid) or '(none)'}")
    hints = _annotations(_builder(name))
    for key, value in options.items():
        annotation: Any = hints.get(key)
        if annotation is None:
            continue
        try:
            TypeAdapter(annotation).validate_python(value)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            raise ValueError(f"{what}.{key}: {reason} (got {value!r}; an option of {name})") from None
        except Exception:
            continue


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_MODELS)
