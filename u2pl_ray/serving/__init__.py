"""Using a trained model outside training: what it expects (preprocessing), where its inputs come from,
and batch inference in one process or through Ray Data."""

from u2pl_ray.serving.inputs import ImageReadError, InputItem, list_inputs, read_image
from u2pl_ray.serving.predictor import Segmenter
from u2pl_ray.serving.preprocess import Preprocessing

__all__ = ["ImageReadError", "InputItem", "Preprocessing", "Segmenter", "list_inputs", "read_image"]
