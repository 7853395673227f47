"""Reading configs: YAML files with `_base_` inheritance, `--set a.b=c` overrides, clear errors."""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from u2pl_ray.config.schema import Config

BASE_KEY = "_base_"


class _ConfigLoader(yaml.SafeLoader):
    """YAML as PyYAML's safe loader reads it, except that digits joined by underscores stay strings: YAML
    1.1 reads the split name 1_16 as the number 116 (and 1:20 as a base-60 number)."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[01]+|[-+]?0[0-7]+|[-+]?(?:0|[1-9][0-9]*)|[-+]?0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """A config's YAML (files, --set values, saved run configs): split names such as 1_16 stay strings."""
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass


class ConfigError(ValueError):
    """A config that cannot be used. The message names the key, what was given and what is allowed."""


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top, found {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else in `over` replaces what `base` had."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_config_tree(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a YAML file after resolving its `_base_` files (relative to it), in order."""
    path = Path(path).expanduser().resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise ConfigError(f"config files include each other in a loop: {chain}")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY} must be a file name or a list of them, given {bases!r}")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = deep_merge(merged, read_config_tree(path.parent / base, (*_seen, path)))
    return deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=c` -> (["a", "b"], c), with c read as YAML (so 3 is an int, [1,2] a list, null None)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} must look like section.key=value")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _known_keys(model: type[BaseModel], path: list[str]) -> tuple[list[str], str]:
    """Keys allowed at `path` and the dotted name of the deepest section that exists."""
    current: Any = model
    walked: list[str] = []
    for part in path:
        fields = current.model_fields
        annotation = fields[part].annotation if part in fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        current = annotation
        walked.append(part)
    return list(current.model_fields), ".".join(walked)


def _unknown_key_message(path: list[str]) -> str:
    allowed, section = _known_keys(Config, path[:-1])
    key = ".".join(path)
    hint = difflib.get_close_matches(path[-1], allowed, n=1)
    where = f"section '{section}'" if section else "the top level"
    msg = f"unknown config key '{key}'"
    if hint:
        msg += f" (did you mean '{'.'.join([*path[:-1], hint[0]])}'?)"
    return f"{msg}; {where} allows: {', '.join(sorted(allowed))}"


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: '{part}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not str(p).startswith("function-after")]
        key = ".".join(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  - {_unknown_key_message(loc)}")
            continue
        given = err.get("input")
        msg = err["msg"].replace("Value error, ", "")
        if err["type"] == "value_error":
            lines.append(f"  - {key}: {msg}")
        else:
            allowed = msg[:1].lower() + msg[1:]  # only the first letter: allowed values keep their case
            lines.append(f"  - {key}: given {given!r} ({type(given).__name__}); allowed: {allowed}")
    return "\n".join(lines)


def build_config(data: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read a config file (or the defaults when `path` is None) and apply `--set` overrides."""
    overrides = list(overrides)
    data = read_config_tree(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    source = str(path) if path is not None else "defaults"
    if overrides:
        source += " with --set " + " ".join(overrides)
    return build_config(data, source)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
