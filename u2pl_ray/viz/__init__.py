"""Pictures of a run: class palettes and overlays, the pseudo-label grid drawn during training, and the
training curves redrawn by `python -m u2pl_ray.report`."""

from u2pl_ray.viz.curves import RunCurves, read_run_curves, write_curves, write_run_curves
from u2pl_ray.viz.palette import ClassTable, class_table, colorize, overlay, voc_palette
from u2pl_ray.viz.pseudo_labels import (
    PseudoLabelGrid,
    first_val_samples,
    render_pseudo_label_grid,
    val_image_uri,
    write_pseudo_label_grid,
)

__all__ = [
    "ClassTable",
    "PseudoLabelGrid",
    "RunCurves",
    "class_table",
    "colorize",
    "first_val_samples",
    "overlay",
    "read_run_curves",
    "render_pseudo_label_grid",
    "val_image_uri",
    "voc_palette",
    "write_curves",
    "write_pseudo_label_grid",
    "write_run_curves",
]
