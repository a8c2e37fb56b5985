"""Typed configs: a dataclass schema gives the type of each key; the YAML gives every value (defaults live there).

`typed_config(cfg, schema)` checks and converts the keys the schema declares (`steps=abc` or `seed=1.5` for an
int, `stitching=no` for a bool) and raises one ConfigError naming the key, the value and the type it takes.
Keys the schema does not declare (config groups, experiment extras) pass through unchanged. Booleans are strict:
only true/false (a string like "no" or "off" is refused rather than guessed).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kdtalker.errors import ConfigError

_TYPE_WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "a text or path"}


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner type, optional) of an annotation such as Optional[int] or list[float]."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return (inner[0] if len(inner) == 1 else Any), True
    return annotation, False


def _field_type(schema: type, dotted: str) -> tuple[Any, bool] | None:
    """The annotation of `dotted` ('train.ema.decay') in the dataclass `schema`, or None when not declared."""
    hints: dict[str, Any] = {}
    node: Any = schema
    result = None
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node):
            return None
        hints = typing.get_type_hints(node)
        if part not in hints:
            return None
        result = _unwrap(hints[part])
        node = result[0]
    return result


def describe_type(schema: type, dotted: str) -> str:
    """Words for the type of a key: 'a whole number', 'true or false', 'a list of numbers', ..."""
    found = _field_type(schema, dotted)
    if found is None:
        return "a value of the right type"
    kind, optional = found
    origin = typing.get_origin(kind)
    if origin in (list, tuple, typing.List):
        inner = typing.get_args(kind)[:1]
        words = f"a list of {_TYPE_WORDS.get(inner[0], 'values').removeprefix('a ')}s" if inner else "a list"
    else:
        words = _TYPE_WORDS.get(kind, getattr(kind, "__name__", "a value"))
    return words + (" or null" if optional else "")


def _strict_bools(cfg: DictConfig, schema: type, prefix: str = "") -> None:
    """ConfigError for a bool key whose value is not true/false (OmegaConf would read 'no' or 'off' as False)."""
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        kind, optional = _unwrap(typing.get_type_hints(schema)[f.name])
        value = OmegaConf.select(cfg, key, throw_on_missing=False, default=None)
        if dataclasses.is_dataclass(kind):
            _strict_bools(cfg, kind, key + ".")
        elif kind is bool and not isinstance(value, bool) and not (optional and value is None):
            raise ConfigError(f"{key}={value!r} is not valid: {key} takes true or false")


def config_error(exc: OmegaConfBaseException, schema: type | None = None) -> ConfigError:
    """One-line ConfigError for an OmegaConf validation/interpolation error, naming the key and its type."""
    key = getattr(exc, "full_key", None) or ""
    message = next((s.strip() for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
    if key and schema is not None and _field_type(schema, key) is not None:
        if "interpolation" in message:
            return ConfigError(f"{key}: {message}; {key} takes {describe_type(schema, key)}")
        return ConfigError(
            f"{key}={getattr(exc, 'value', '?')!r} is not valid: {key} takes {describe_type(schema, key)}"
        )
    return ConfigError(f"{key}: {message}" if key else message)


def typed_config(cfg: DictConfig, schema: type) -> DictConfig:
    """cfg with every key of `schema` type-checked and converted; other keys untouched; ConfigError otherwise."""
    try:
        _strict_bools(cfg, schema)
        typed = OmegaConf.structured(schema)
        OmegaConf.set_struct(typed, False)  # undeclared keys (groups, experiment extras) pass through untyped
        merged = OmegaConf.merge(typed, cfg)
        # Interpolated values are checked when read: read every declared key once, here.
        for f in dataclasses.fields(schema):
            OmegaConf.select(merged, f.name, throw_on_missing=False)
            if dataclasses.is_dataclass(_unwrap(typing.get_type_hints(schema)[f.name])[0]):
                OmegaConf.to_container(merged[f.name], resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as exc:
        raise config_error(exc, schema) from None
    OmegaConf.set_struct(merged, True)
    return merged
