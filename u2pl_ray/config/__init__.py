"""Typed run configuration: `load_config(path, overrides)` returns a validated `Config`."""

from u2pl_ray.config.loader import (
    ConfigError,
    apply_overrides,
    build_config,
    config_to_dict,
    dump_config,
    load_config,
    load_yaml,
    read_config_tree,
)
from u2pl_ray.config.schema import (
    Config,
    DataConfig,
    EvalConfig,
    FaultConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    ScalingConfig,
    ScheduleConfig,
    StorageConfig,
    SyntheticConfig,
)

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "FaultConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "ScalingConfig",
    "ScheduleConfig",
    "StorageConfig",
    "SyntheticConfig",
    "apply_overrides",
    "build_config",
    "config_to_dict",
    "dump_config",
    "load_config",
    "load_yaml",
    "read_config_tree",
]
