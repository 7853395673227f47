"""Real scans with expert labels: the INIA19 macaque brain MRI and its NeuroMaps atlas (Debian's
`mricron-data`, BSD-3) as a plain folder dataset, converted with the product's own `folder` converter.

    python benchmarks/mri_data.py --out data/inia19            # folder dataset + shards in data/inia19/shards
    python benchmarks/mri_data.py --out DIR --shards s3://bucket/inia19

2-D slices of the T1 volume (0.5 mm voxels): sagittal slices, and coronal and axial slices cut at the
midline, so that every image lies in one hemisphere. The left hemisphere's slices are the training set
(splits 1_16 and full, nested), the right hemisphere's the validation set: no voxel is in both. The
atlas's ~360 structures per hemisphere are grouped along its label-id hierarchy into 6 regions
(blocks of 50 ids; NeuroMaps numbers one hemisphere's structures id + 1000) plus background.
"""

from __future__ import annotations

import argparse
import gzip
import struct
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = Path("/usr/share/mricron/templates")
T1, ATLAS = "inia19-t1-brain.nii.gz", "inia19-NeuroMaps.nii.gz"
REGIONS = ("background", "ids_1_49", "ids_50_99", "ids_100_149", "ids_150_199", "ids_200_249", "ids_250_up")
MIDLINE_X = 84  # voxel column between the hemispheres (atlas ids < 1000: x 24..85, >= 1000: x 83..143)
MIN_LABELLED = 0.02  # slices with less brain than this share of their pixels are left out
_DTYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64, 256: np.int8, 512: np.uint16}


def read_nifti(path: Path) -> np.ndarray:
    """The voxel array of a (gzipped) single-file NIfTI-1 volume, indexed [x, y, z]."""
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    if struct.unpack("<i", raw[:4])[0] != 348:
        raise ValueError(f"{path} is not a little-endian NIfTI-1 file")
    dims = struct.unpack("<8h", raw[40:56])
    datatype = struct.unpack("<h", raw[70:72])[0]
    offset = int(struct.unpack("<f", raw[108:112])[0])
    if datatype not in _DTYPES:
        raise ValueError(f"{path}: NIfTI datatype {datatype} is not supported")
    shape = dims[1 : 1 + dims[0]]
    return np.frombuffer(raw, _DTYPES[datatype], int(np.prod(shape)), offset).reshape(shape, order="F")


def regions(atlas: np.ndarray) -> np.ndarray:
    """uint8 class map: 0 background, 1..6 the id blocks of REGIONS (both hemispheres alike)."""
    base = np.where(atlas >= 1000, atlas - 1000, atlas).astype(np.int64)
    out = np.minimum(base // 50, len(REGIONS) - 2) + 1
    return np.where(atlas > 0, out, 0).astype(np.uint8)


def to_uint8(t1: np.ndarray) -> np.ndarray:
    top = float(np.percentile(t1[t1 > 0], 99.5))
    return np.clip(t1 / top * 255.0, 0, 255).astype(np.uint8)


def hemisphere_slices(image: np.ndarray, mask: np.ndarray, side: str):
    """(stem, image2d, mask2d) of every slice within one hemisphere (`left`: x < MIDLINE_X), superior up."""
    xs = range(0, MIDLINE_X) if side == "left" else range(MIDLINE_X, image.shape[0])
    half = slice(0, MIDLINE_X) if side == "left" else slice(MIDLINE_X, image.shape[0])
    views = [("sag", x, image[x], mask[x]) for x in xs]  # [y, z]
    views += [("cor", y, image[half, y], mask[half, y]) for y in range(image.shape[1])]  # [x, z]
    views += [("axi", z, image[half, :, z], mask[half, :, z]) for z in range(image.shape[2])]  # [x, y]
    for view, index, img, msk in views:
        if (msk > 0).mean() < MIN_LABELLED:
            continue
        if view != "axi":  # z was the last axis: put it vertical, superior on top
            img, msk = img.T[::-1], msk.T[::-1]
        yield f"{side}-{view}-{index:03d}", np.ascontiguousarray(img), np.ascontiguousarray(msk)


def build(out: Path, templates: Path = TEMPLATES) -> dict[str, int]:
    """Writes out/images/*.png, out/masks/*.png, out/classes.txt and out/val.txt (the right hemisphere)."""
    from PIL import Image

    missing = [name for name in (T1, ATLAS) if not (templates / name).is_file()]
    if missing:
        raise SystemExit(f"{templates} lacks {missing}: install Debian's package (apt-get install mricron-data)")
    image = to_uint8(read_nifti(templates / T1))
    mask = regions(read_nifti(templates / ATLAS))
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    counts, val = {}, []
    for side in ("left", "right"):
        stems = []
        for stem, img, msk in hemisphere_slices(image, mask, side):
            Image.fromarray(img, mode="L").save(out / "images" / f"{stem}.png")
            Image.fromarray(msk, mode="L").save(out / "masks" / f"{stem}.png")
            stems.append(stem)
        counts[side] = len(stems)
        if side == "right":
            val = stems
    (out / "classes.txt").write_text("\n".join(REGIONS) + "\n")
    (out / "val.txt").write_text("\n".join(val) + "\n")
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "data" / "inia19"), help="folder dataset (images/, masks/)")
    p.add_argument("--shards", help="converted dataset URI (default OUT/shards)")
    p.add_argument("--templates", default=str(TEMPLATES))
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from u2pl_ray.data.convert import main as convert

    out = Path(args.out)
    counts = build(out, Path(args.templates))
    print(f"{counts['left']} training slices (left hemisphere), {counts['right']} validation slices (right)")
    return convert(
        [
            "folder",
            "--root",
            str(out),
            "--classes",
            str(out / "classes.txt"),
            "--val-list",
            str(out / "val.txt"),
            "--fraction",
            "1_16",
            "--fraction",
            "full",
            "--name",
            "inia19",
            "--out",
            args.shards or str(out / "shards"),
            "--overwrite",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
