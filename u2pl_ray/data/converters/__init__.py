"""Converters from common dataset layouts to u2pl-ray shards (see u2pl_ray.data.convert for the CLI)."""
