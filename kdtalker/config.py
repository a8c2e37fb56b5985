"""Configs: composed from kdtalker/configs/ (the YAML gives every value), typed by a dataclass schema.

`compose_config(name, overrides, schema)` composes config `name` with `key=value` overrides: the one way every entry
point and the Python API read a config. `typed_config(cfg, schema)` checks and converts the keys the schema declares
(`steps=abc` or `seed=1.5` for an int, `stitching=no` for a bool) and raises one ConfigError naming the key, the
value and the type it takes. Keys the schema does not declare (config groups, experiment extras) pass through
unchanged. Booleans are strict: only true/false (a string like "no" or "off" is refused rather than guessed).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import types
import typing
from pathlib import Path
from typing import Any, Sequence

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kdtalker.errors import ConfigError
from kdtalker.overrides import is_group, parse_override, quote_plain_value, unknown_key_message

CONFIG_DIR = Path(str(importlib.resources.files("kdtalker.configs")))  # the YAML ships inside the package

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


def _is_node(schema: type, name: str) -> bool:
    """Whether the key `name` of `schema` is a nested dataclass (a config node)."""
    return dataclasses.is_dataclass(_unwrap(typing.get_type_hints(schema)[name])[0])


def typed_config(cfg: DictConfig, schema: type) -> DictConfig:
    """cfg with every key of `schema` type-checked and converted; other keys untouched; ConfigError otherwise."""
    try:
        _strict_bools(cfg, schema)
        typed = OmegaConf.structured(schema)
        # undeclared keys (groups, experiment extras, a group's own keys beside the typed ones) pass through untyped
        for node in [typed, *(typed[f.name] for f in dataclasses.fields(schema) if _is_node(schema, f.name))]:
            OmegaConf.set_struct(node, False)
        merged = OmegaConf.merge(typed, cfg)
        # Interpolated values are checked when read: read every declared key once, here.
        for f in dataclasses.fields(schema):
            OmegaConf.select(merged, f.name, throw_on_missing=False)
            if _is_node(schema, f.name):
                OmegaConf.to_container(merged[f.name], resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as exc:
        raise config_error(exc, schema) from None
    OmegaConf.set_struct(merged, True)
    return merged


def _compose(config_dir: str | os.PathLike, config_name: str, overrides: Sequence[str]) -> Any:
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def _unknown_key(config_dir: str | os.PathLike, config_name: str, overrides: Sequence[str]) -> str | None:
    """The line for the first override of a key the config (with the overrides' groups) lacks; None when none."""
    parsed = [o for o in map(parse_override, overrides) if o is not None]
    groups = [o for o in parsed if is_group(config_dir, o)]
    try:
        base = _compose(config_dir, config_name, [o.input_line for o in groups])
    except (HydraException, OmegaConfBaseException):
        return None
    names = sorted(p.name for p in Path(config_dir).iterdir() if p.is_dir())
    lines = (unknown_key_message(o, base, names) for o in parsed if o not in groups)
    return next((line for line in lines if line), None)


def compose_config(
    config_name: str,
    overrides: Sequence[str] = (),
    schema: type | None = None,
    config_dir: str | os.PathLike = CONFIG_DIR,
) -> Any:
    """Hydra config `config_name` (of kdtalker/configs/) with `overrides`, typed by `schema`; ConfigError otherwise.

    A plain value Hydra's grammar cannot read (a path with non-ASCII letters, ...) is taken as text; a key the
    config does not have, also with `+key=` (nothing would read it), is refused naming the closest keys."""
    overrides = [quote_plain_value(o) for o in overrides]
    try:
        cfg = _compose(config_dir, config_name, overrides)
    except HydraException as exc:
        raise ConfigError(_unknown_key(config_dir, config_name, overrides) or _hydra_message(exc, overrides)) from None
    except OmegaConfBaseException as exc:
        raise config_error(exc, schema) from None
    if any(o.lstrip().startswith("+") for o in overrides):
        added = _unknown_key(config_dir, config_name, overrides)
        if added:
            raise ConfigError(added)
    return typed_config(cfg, schema) if schema is not None else cfg


def _hydra_message(exc: Exception, overrides: Sequence[str]) -> str:
    """Hydra's multi-line override errors as one line: what failed and the hint, without the internals."""
    text = str(exc).split("Config search path:")[0]
    lines = [s.strip() for s in text.splitlines() if s.strip()]
    internals = ("full_key:", "object_type=", "reference_type=", "Set the environment", "See https://hydra.cc")
    keep = [s for s in lines if not s.startswith(internals)]
    if lines and lines[0].startswith(("mismatched input", "LexerNoViableAltException", "no viable alternative")):
        keep = [
            f"cannot parse the overrides {' '.join(overrides)} ({lines[0]}); write them as key=value, one per "
            "argument, and quote a value with special characters for Hydra: \"key='value'\""
        ]
    message = " ".join(keep).replace("Available options in", "; available options in").replace(": ;", ";")
    return message.replace(" ;", ";") or type(exc).__name__
