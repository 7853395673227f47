"""The methods the engine can run, by `method.name`. Adding one: a module in u2pl_ray/method/ with a
`Method` subclass, an entry here, a config, tests (README, "Adding a method")."""

from __future__ import annotations

from typing import Any

from u2pl_ray.method.base import Method, MethodContext
from u2pl_ray.method.sup_only import SupOnly
from u2pl_ray.method.u2pl import U2PL
from u2pl_ray.method.unimatch import UniMatch

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (U2PL, UniMatch, SupOnly)}


def method_class(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method.name {name!r}; known: {', '.join(sorted(METHODS))}") from None


def build_method(cfg: Any, ctx: MethodContext) -> Method:
    """The method of a MethodConfig (`cfg.name`), built for one worker."""
    cls: Any = method_class(cfg.name)  # each method's constructor takes (its config, the context)
    return cls(cfg, ctx)
