"""The search space of a sweep, written in YAML as `config.key: {kind: values}`.

    method.drop_percent: {grid: [70, 80, 90]}
    optim.lr: {loguniform: [3.0e-4, 3.0e-3]}

Kinds: choice, grid, uniform, loguniform, randint, quniform ([low, high, q]). Every key must be a
config key, and every value it can take must pass the config's own validation.
"""

from __future__ import annotations

import copy
from typing import Any

from u2pl_ray.config import ConfigError, build_config
from u2pl_ray.config.loader import apply_overrides

KINDS = ("choice", "grid", "uniform", "loguniform", "randint", "quniform")


def _domain(key: str, spec: Any) -> Any:
    from ray import tune

    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"tune.search_space.{key}: expected one of {{{', '.join(KINDS)}: values}}, given {spec!r}")
    ((kind, values),) = spec.items()
    if kind not in KINDS:
        raise ConfigError(f"tune.search_space.{key}: unknown kind {kind!r}; allowed: {', '.join(KINDS)}")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"tune.search_space.{key}.{kind}: expected a non-empty list, given {values!r}")
    if kind == "choice":
        return tune.choice(values)
    if kind == "grid":
        return tune.grid_search(values)
    bounds = {"uniform": 2, "loguniform": 2, "randint": 2, "quniform": 3}[kind]
    if len(values) != bounds or not all(isinstance(v, (int, float)) for v in values) or values[0] >= values[1]:
        raise ConfigError(
            f"tune.search_space.{key}.{kind}: expected {bounds} numbers [low, high{', q' if bounds == 3 else ''}] "
            f"with low < high, given {values!r}"
        )
    if kind == "loguniform" and values[0] <= 0:
        raise ConfigError(f"tune.search_space.{key}.loguniform: bounds must be > 0, given {values!r}")
    return getattr(tune, kind)(*values)


def _probe_values(spec: dict[str, list]) -> list[Any]:
    ((kind, values),) = spec.items()
    if kind in ("choice", "grid"):
        return list(values)
    if kind == "randint":
        return [int(values[0]), int(values[1]) - 1]
    return [values[0], values[1]]


def apply_params(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The config mapping with each `a.b` parameter set to its sampled value."""
    return apply_overrides(copy.deepcopy(base), [f"{k}={_yaml(v)}" for k, v in params.items()])


def _yaml(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def build_search_space(base: dict[str, Any], space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Tune domains per key, after checking each key and the ends of each range against the config."""
    if not space:
        raise ConfigError("tune.search_space is empty: name at least one config key to sweep")
    domains = {}
    for key, spec in space.items():
        domain = _domain(key, spec)
        for value in _probe_values(spec):
            try:
                build_config(apply_params(base, {key: value}), source=f"tune.search_space.{key}")
            except ConfigError as exc:
                raise ConfigError(
                    f"tune.search_space.{key} can take {value!r}, which the config refuses:\n{exc}"
                ) from None
        domains[key] = domain
    return domains
