"""Dotted overrides and validation-error messages, shared by ``pipeline.yaml`` loading and training recipes.

``set_dotted(data, "augment.flip_p", 0.3)`` writes one value into nested mappings; ``parse_assignments`` reads
command-line ``KEY=VALUE`` pairs (YAML values); ``describe`` turns a pydantic ``ValidationError`` into a
``ConfigError`` whose message names every bad key (one line per key, one line in all for a single bad key).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

__all__ = [
    "ConfigError",
    "decode_utf8",
    "describe",
    "parse_assignments",
    "read_mapping",
    "read_yaml_file",
    "set_dotted",
]


class ConfigError(ValueError):
    """A config file, recipe or override that does not validate; the message names each bad key."""


def describe(error: ValidationError, source: str) -> ConfigError:
    """``source: key: message (got value)``, one entry per error; several errors go on indented lines."""
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"] if part != "[key]") or "(top level)"  # a dict's key
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        got = "" if item["type"] in ("extra_forbidden", "value_error") else f" (got {item.get('input')!r})"
        lines.append(f"{key}: {message}{got}")
    if len(lines) == 1:
        return ConfigError(f"{source}: {lines[0]}")
    return ConfigError(f"{source}: invalid configuration\n" + "\n".join(f"  {line}" for line in lines))


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``data["a"]["b"] = value`` for ``key`` "a.b"; missing sections are created (validation names unknown keys)."""
    node = data
    *parents, leaf = key.split(".")
    if not leaf or not all(parents):
        raise ConfigError(f"override {key!r}: empty key part")
    for part in parents:
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
        node = child
    node[leaf] = value


def apply_dotted(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``data`` with every dotted override set (in order)."""
    out: dict[str, Any] = _copy(data)
    for key, value in overrides.items():
        set_dotted(out, key, value)
    return out


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def parse_assignments(items: Iterable[str], option: str = "--set") -> dict[str, Any]:
    """``["a.b=1", "c=[64, 32]"]`` -> ``{"a.b": 1, "c": [64, 32]}``; values are YAML."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} takes KEY=VALUE (YAML value, dotted key for nesting), got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{option} {key.strip()}: not a YAML value: {value!r}") from exc
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"key {key!r} is given twice (lines {seen[key]} and {line}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_mapping(text: str, source: str) -> dict[str, Any]:
    """Parse YAML ``text`` whose top level must be a non-empty mapping with unique keys; errors name ``source``."""
    try:
        loaded = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if loaded is None:
        raise ConfigError(
            f"{source}: the file is empty (or only comments): give at least one key, or leave it out to use the "
            "defaults"
        )
    if not isinstance(loaded, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(loaded).__name__}")
    return loaded


def read_yaml_file(path: Path, what: str = "config file") -> dict[str, Any]:
    """``read_mapping`` of a UTF-8 file; a missing or non-UTF-8 file is a ``ConfigError``."""
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    return read_mapping(decode_utf8(path.read_bytes(), str(path)), str(path))


def decode_utf8(data: bytes, source: str) -> str:
    """``data`` as UTF-8 text; otherwise a ``ConfigError`` naming the byte offset (save the file as UTF-8)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{source}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): save it as UTF-8"
        ) from None
