"""The built-in synthetic benchmark (also the demo dataset): `generate_synthetic(cfg, out_uri)`."""

from u2pl_ray.data.synthetic.generator import generate_synthetic, render_image, synthetic_key

__all__ = ["generate_synthetic", "render_image", "synthetic_key"]
