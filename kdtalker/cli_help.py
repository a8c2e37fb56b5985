"""`--help` of an entry script: its own settings with the YAML's comments, then the config groups, then `--cfg job`.

The descriptions are the one-line comments of the config files themselves (`key: value   # what it is`, continued
on the next lines when they start with `#` under it), so every default and its description live once, in the YAML.
The values shown are the composed ones (the command line's overrides and the preset applied).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from kdtalker.overrides import is_group, parse_override

_KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w-]*):(?P<rest>.*)$")
_DEFAULT = re.compile(r"^\s*-\s*(?:(?:optional|override)\s+)?(?P<name>[\w/]+)(?:\s*:\s*(?P<option>[\w/.-]+))?\s*$")
_VALUE_WIDTH = 40


def _split_comment(text: str) -> tuple[str, str, int]:
    """'value   # comment' -> ('value', 'comment', column of '#'); a '#' inside a word (a#b) is part of the value."""
    match = re.search(r"(^|\s)#", text)
    if match is None:
        return text.strip(), "", -1
    return text[: match.start()].strip(), text[match.end() :].strip(), match.end() - 1


@dataclass
class YamlDoc:
    """What a config file says about itself: dotted keys in order with their comments, and its defaults list."""

    keys: dict[str, str] = field(default_factory=dict)
    defaults: list[tuple[str, str | None, str]] = field(default_factory=list)  # (name, option or None, comment)


def read_yaml_doc(path: Path) -> YamlDoc:
    """Keys, comments and defaults of one YAML config, read line by line (PyYAML drops comments)."""
    doc = YamlDoc()
    stack: list[tuple[int, str]] = []
    last: str | None = None  # the key a comment-only line under it continues (aligned with its comment)
    last_column = -1
    list_indent: int | None = None  # inside a block list (a value): its items are not keys
    in_defaults = False
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not stripped:
            continue
        if stripped.startswith("#"):
            if last is not None and last_column >= 0 and abs(indent - last_column) <= 2:
                doc.keys[last] = f"{doc.keys[last]} {stripped.lstrip('#').strip()}"
            continue
        if in_defaults and stripped.startswith("-"):
            value, comment, _ = _split_comment(stripped)
            match = _DEFAULT.match(value)
            if match:
                doc.defaults.append((match["name"], match["option"], comment))
            continue
        if stripped.startswith("-") or (list_indent is not None and indent > list_indent):
            list_indent = indent if list_indent is None else list_indent
            last = None
            continue
        list_indent = None
        match = _KEY.match(line)
        if match is None:
            last = None
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [match["key"]])
        _, comment, column = _split_comment(match["rest"])
        in_defaults = dotted == "defaults"
        if not in_defaults:
            doc.keys[dotted] = comment
            last, last_column = dotted, (column + len(line) - len(match["rest"]) if comment else -1)
        stack.append((indent, match["key"]))
    return doc


def _shown(value: Any) -> str:
    """A value as one would type it: null, true, 0.5, a/path, [1, 2], {a: 1}; a long list or dict is cut short."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {_shown(v)}" for k, v in value.items()) + "}"
    elif isinstance(value, list):
        text = "[" + ", ".join(_shown(v) for v in value) + "]"
    else:
        return str(value)
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 3] + "..."


def _included(config_dir: Path, name: str) -> list[str]:
    """The plain configs the defaults list of `name` includes (demo -> inference), recursively, in order."""
    names: list[str] = []
    for entry, option, _ in read_yaml_doc(config_dir / f"{name}.yaml").defaults:
        if option is None and entry != "_self_" and (config_dir / f"{entry}.yaml").is_file():
            names += [*_included(config_dir, entry), entry]
    return names


def _docs(config_dir: Path, name: str) -> list[YamlDoc]:
    """The docs of config `name` (its own keys first) and of the configs it includes."""
    return [read_yaml_doc(config_dir / f"{n}.yaml") for n in [name, *_included(config_dir, name)]]


def _options(config_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def _documented_addition(config_dir: Path, group: str, scripts: Sequence[str]) -> bool:
    """True when a file of `group` documents `python SCRIPT.py +GROUP=...` for one of `scripts` (the configs read)."""
    uses = [f"{script}.py +{group}=" for script in scripts]
    return any(u in p.read_text(encoding="utf-8") for p in (config_dir / group).glob("*.yaml") for u in uses)


def _folder(config_dir: Path) -> str:
    """The config folder as a reader finds it: kdtalker/configs for the packaged one."""
    return f"{config_dir.parent.name}/{config_dir.name}" if config_dir.parent.name == "kdtalker" else config_dir.name


def help_text(config_dir: str | Path, name: str, cfg: DictConfig, overrides: Sequence[str] = ()) -> str:
    """The settings of config `name` with their comments and composed values, its groups, and where the rest is."""
    config_dir = Path(config_dir)
    parsed = [parse_override(o) for o in overrides]
    chosen = {o.key_or_group: str(o.value()) for o in parsed if o is not None and is_group(config_dir, o)}
    docs = _docs(config_dir, name)
    scripts = [name, *_included(config_dir, name)]
    keys: dict[str, str] = {}
    for doc in docs:
        for key, comment in doc.keys.items():
            keys[key] = comment or keys.get(key, "")
    rows = []
    absent = object()
    for key, comment in keys.items():
        if any(k.startswith(key + ".") for k in keys):  # a section: its comment, then its keys
            rows += [(f"{key}.*", comment)] if comment else []
            continue
        node = OmegaConf.select(cfg, key, default=absent, throw_on_missing=False, throw_on_resolution_failure=False)
        if node is not absent:  # a key an override group removed is not shown
            rows.append((f"{key}={_shown(node)}", comment))
    groups = {}
    for doc in docs:
        for group, option, comment in doc.defaults:
            if option is not None and (config_dir / group).is_dir():
                groups.setdefault(group, (chosen.get(group, option), comment))  # the script's own choice wins
    rows_groups = []
    for group, (option, comment) in groups.items():
        choices = "options: " + ", ".join(_options(config_dir, group))
        rows_groups.append((f"{group}={option}", f"{comment}; {choices}" if comment else choices))
    extra = [
        p.name
        for p in sorted(config_dir.iterdir())
        if p.is_dir() and p.name not in groups and _documented_addition(config_dir, p.name, scripts)
    ]
    for group in extra:
        rows_groups.append((f"+{group}=NAME", "options: " + ", ".join(_options(config_dir, group))))
    width = min(34, max(len(left) for left, _ in rows + rows_groups) + 2)

    def line(left: str, text: str) -> str:
        return f"  {left}{' ' * max(2, width - len(left))}{text}".rstrip()

    lines = [f"Settings (key=value; defaults: {_folder(config_dir)}/{name}.yaml):", *(line(*row) for row in rows)]
    if rows_groups:
        lines.append(f"Config groups (group=option; files in {_folder(config_dir)}/GROUP/):")
        lines += [line(*row) for row in rows_groups]
    lines.append("all keys: --cfg job")
    return "\n".join(lines)
