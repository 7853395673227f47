"""benchmarks/mri_data.py on the real INIA19 files (Debian's mricron-data; `make data-packages`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("mri_data", REPO / "benchmarks" / "mri_data.py")
mri = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mri)

pytestmark = pytest.mark.skipif(
    not (mri.TEMPLATES / mri.ATLAS).is_file(), reason="mricron-data is not installed (make data-packages)"
)


def test_both_hemispheres_map_to_the_same_regions():
    atlas = np.array([0, 1, 49, 50, 55, 1055, 1001, 260, 1605], dtype=np.int16)
    assert mri.regions(atlas).tolist() == [0, 1, 1, 2, 2, 2, 1, 6, 6]
    volume = mri.read_nifti(mri.TEMPLATES / mri.ATLAS)
    assert volume.shape == (168, 206, 128)
    left, right = volume[: mri.MIDLINE_X], volume[mri.MIDLINE_X :]
    # the id + 1000 structures lie on one side of the midline, the others on the other (a voxel's width of overlap)
    assert (left >= 1000).mean() < 1e-3 and ((right > 0) & (right < 1000)).mean() < 1e-3


def test_the_folder_dataset_splits_by_hemisphere_and_converts(tmp_path):
    out = tmp_path / "inia19"
    assert mri.main(["--out", str(out)]) == 0
    stems = sorted(p.stem for p in (out / "images").glob("*.png"))
    val = (out / "val.txt").read_text().split()
    assert val and all(s.startswith("right-") for s in val)
    assert set(stems) - set(val) == {s for s in stems if s.startswith("left-")}
    assert {s.split("-")[1] for s in stems} == {"sag", "cor", "axi"}
    classes = (out / "classes.txt").read_text().split()
    assert classes[0] == "background" and len(classes) <= 13  # background + at most 12 regions
    for stem in stems[::25]:
        image, mask = (
            np.array(Image.open(out / "images" / f"{stem}.png")),
            np.array(Image.open(out / "masks" / f"{stem}.png")),
        )
        assert image.shape == mask.shape and image.dtype == np.uint8 and mask.max() < len(classes)
        assert (mask > 0).mean() >= mri.MIN_LABELLED and image[mask > 0].mean() > image[mask == 0].mean()
    from u2pl_ray.data.info import read_manifest

    manifest = read_manifest(str(out / "shards"))
    assert manifest.val.rows == len(val)
    full, small = manifest.part("full", "labeled").rows, manifest.part("1_16", "labeled").rows
    assert full == len(stems) - len(val) and small == round(full / 16)
    assert manifest.part("1_16", "unlabeled").rows == full - small
