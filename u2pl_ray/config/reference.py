"""docs/config.md, generated from the schema: every key with its type, default, allowed values and
description. `python -m u2pl_ray.config.reference --write` regenerates it; a test fails when it is stale
or when a key has no description."""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from u2pl_ray.config.schema import Config

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, FieldInfo]]:
    """(dotted key, field) of every leaf key, sections in declaration order."""
    out: list[tuple[str, FieldInfo]] = []
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            out += fields(info.annotation, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", info))
    return out


def _type(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return "choice"
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("|", "or")


def _allowed(info: FieldInfo) -> str:
    annotation = info.annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    literal = [a for a in args if typing.get_origin(a) is Literal]
    if literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(literal[0])) + " or `null`"
    bounds = []
    for meta in info.metadata:
        for op, symbol in (
            ("gt", ">"),
            ("ge", "≥"),
            ("lt", "<"),
            ("le", "≤"),
            ("min_length", "length ≥"),
            ("max_length", "length ≤"),
        ):
            value = getattr(meta, op, None)
            if value is not None:
                bounds.append(f"{symbol} {value}")
    return ", ".join(bounds)


def _default(info: FieldInfo) -> str:
    value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    return f"`{json.dumps(value)}`"


def render() -> str:
    lines = [
        "# Configuration keys",
        "",
        "Generated from `u2pl_ray/config/schema.py` by `python -m u2pl_ray.config.reference --write`; "
        "`tests/test_config_reference.py` fails when this file is stale or a key has no description. "
        "Set a key in YAML or with `--set section.key=value`; `python -m u2pl_ray.train --print-config` "
        "prints a run's resolved config.",
    ]
    section = None
    for key, info in fields(Config):
        head = key.split(".")[0] if "." in key else "(top level)"
        if head != section:
            section = head
            lines += [
                "",
                f"## `{section}`" if section != "(top level)" else "## top level",
                "",
                "| key | type | default | allowed | description |",
                "|---|---|---|---|---|",
            ]
        description = (info.description or "").replace("|", "\\|").replace("<", "&lt;")
        lines.append(f"| `{key}` | {_type(info.annotation)} | {_default(info)} | {_allowed(info)} | {description} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help=f"write {DOC} instead of printing")
    args = p.parse_args(argv)
    text = render()
    if args.write:
        DOC.write_text(text)
        print(f"written: {DOC}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
