"""Command-line overrides before and after Hydra: quoting of plain values its grammar cannot read, unknown keys.

- `quote_plain_value("source_image=/tmp/фото 顔.png")` -> `source_image='/tmp/фото 顔.png'`: a value Hydra's override
  grammar cannot parse (non-ASCII letters, parentheses, an apostrophe, ...) or would read as a sweep (a comma) is
  taken as the text it is. Values that are lists, dicts, quoted or interpolations are left to Hydra as they are.
- `unknown_key_message(...)`: one line for a key the config does not have (`source_imag=...`, `+foo=1`), naming the
  closest known keys.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException
from omegaconf import DictConfig

_PARSER = OverridesParser.create()
_STRUCTURED = ("[", "{", "'", '"')  # lists, dicts and quoted values: the user wrote Hydra syntax on purpose


def parse_override(text: str) -> Override | None:
    """Hydra's reading of one `key=value` override, or None when its grammar cannot parse it."""
    try:
        return _PARSER.parse_override(text)
    except HydraException:
        return None


def _quoted(value: str) -> str:
    """`value` in single quotes for Hydra: a quote, and backslashes before a quote or at the end, are escaped."""
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value) + "'"


def quote_plain_value(text: str) -> str:
    """`key=value` with the value quoted when Hydra cannot parse it or would read it as a sweep; else unchanged."""
    key, sep, value = text.partition("=")
    plain = sep and value.strip() and not value.lstrip().startswith(_STRUCTURED) and "${" not in value
    if not plain or "=" in value:  # a second '=' is two overrides run together: let the parse error say so
        return text
    parsed = parse_override(text)
    if parsed is not None and not parsed.is_sweep_override():
        return text
    quoted = f"{key}={_quoted(value)}"
    return quoted if parse_override(quoted) is not None else text


def is_group(config_dir: str | Path, override: Override) -> bool:
    """True when the override names a config group (a folder of the configs, e.g. `preset=fast`, `+experiment=X`)."""
    return (Path(config_dir) / override.key_or_group).is_dir()


def known_keys(cfg: DictConfig, prefix: str = "") -> Iterator[str]:
    """Every dotted key of `cfg`, parents included ('control', 'control.pose', ...)."""
    for key in cfg.keys():
        dotted = f"{prefix}{key}"
        yield dotted
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_missing() and not node._is_none():
            yield from known_keys(node, dotted + ".")


def closest(name: str, names: Sequence[str]) -> list[str]:
    """Up to three of `names` spelled most like `name` (difflib), the best first."""
    leaf = name.rsplit(".", 1)[-1]
    found = difflib.get_close_matches(name, names, n=3, cutoff=0.8)
    by_leaf = {n.rsplit(".", 1)[-1]: n for n in names}  # a typo in the last part only: 'crop.scal', 'train.lr_'
    found += [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=3, cutoff=0.75)]
    return list(dict.fromkeys(found))[:3]


def unknown_key_message(override: Override, cfg: Any, groups: Sequence[str]) -> str | None:
    """One line for an override of a key `cfg` does not have (None when it has it): the closest known keys."""
    key = override.key_or_group
    if override.type == OverrideType.DEL or key in set(known_keys(cfg)):
        return None
    names = [*known_keys(cfg), *groups]
    near = closest(key, names)
    hint = f"did you mean {' or '.join(near)}?" if near else "--help lists the keys"
    if override.type in (OverrideType.ADD, OverrideType.FORCE_ADD):
        return f"{override.input_line}: {key} is not a setting, nothing would read it; {hint}"
    return f"unknown key {key} in {override.input_line}; {hint}"
