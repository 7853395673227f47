"""u2pl-ray: semi-supervised semantic segmentation with U2PL, trained on Ray.

Importing the package loads neither Ray nor the network code: the algorithm lives in
`u2pl_ray.method`, the network in `u2pl_ray.model`, data in `u2pl_ray.data`, the per-worker loop
in `u2pl_ray.engine`, and the entry points in `u2pl_ray.train`, `tune`, `evaluate`, `predict`, `export`.
"""

__version__ = "0.1.0"
