"""Each converter on a small tree in the official layout, through the CLI, checked row by row."""

import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from u2pl_ray.data.convert import main as convert_main
from u2pl_ray.data.palette import voc_palette
from u2pl_ray.data.schema import SHARD_SCHEMA


def save_image(path: Path, h: int, w: int, seed: int, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, format=fmt)


def save_mask(path: Path, ids: np.ndarray, palette: bool = False) -> None:
    """Class ids as a grey PNG, or as a VOC-style palette PNG (pixel values are the indices)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = np.ascontiguousarray(ids, dtype=np.uint8)
    img = Image.frombytes("P" if palette else "L", (ids.shape[1], ids.shape[0]), ids.tobytes())
    if palette:
        img.putpalette([v for c in voc_palette(256) for v in c])
    img.save(path)


def rows_of(root: Path, rel_dir: str) -> list[dict]:
    out = []
    for shard in sorted((root / rel_dir).glob("part-*.parquet")):
        table = pq.read_table(shard)
        assert table.schema.equals(SHARD_SCHEMA, check_metadata=False)
        out.extend(table.to_pylist())
    return out


def decode_ids(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def no_temporary_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.startswith(".tmp")]


def test_voc_tree_with_official_split_lists(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    ids = [f"2007_{i:06d}" for i in range(7)]
    masks = {}
    for k, i in enumerate(ids):
        save_image(voc / "JPEGImages" / f"{i}.jpg", 20 + k, 30, k)
        m = np.zeros((20 + k, 30), dtype=np.uint8)
        m[2:8, 3:9] = k % 21
        m[0, :] = 255  # VOC boundary / ignore
        masks[i] = m
        save_mask(voc / "SegmentationClassAug" / f"{i}.png", m, palette=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids[5:]) + "\n")
    split = tmp_path / "splits" / "pascal" / "2"
    split.mkdir(parents=True)
    # both forms of the official list lines
    (split / "labeled.txt").write_text(f"{ids[0]}\nJPEGImages/{ids[1]}.jpg SegmentationClassAug/{ids[1]}.png\n")
    (split / "unlabeled.txt").write_text("\n".join(ids[2:5]) + "\n")
    out = tmp_path / "out"
    assert (
        convert_main(["voc", "--root", str(voc), "--split", f"2={split}", "--out", str(out), "--shard-rows", "2"]) == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["name"] for c in manifest["classes"]][:3] == ["background", "aeroplane", "bicycle"]
    assert manifest["splits"]["2"]["labeled"]["rows"] == 2 and manifest["splits"]["2"]["unlabeled"]["rows"] == 3
    assert manifest["val"]["rows"] == 2 and len(manifest["splits"]["2"]["unlabeled"]["shards"]) == 2
    labeled = rows_of(out, "splits/2/labeled")
    assert [r["id"] for r in labeled] == ids[:2]
    for r in labeled:
        assert np.array_equal(decode_ids(r["mask"]), masks[r["id"]])  # palette indices, 255 kept
        assert r["image"] == (voc / "JPEGImages" / f"{r['id']}.jpg").read_bytes()  # JPEG bytes kept as they are
        assert (r["height"], r["width"]) == masks[r["id"]].shape and r["split"] == "2/labeled"
    unlabeled = rows_of(out, "splits/2/unlabeled")
    assert [r["id"] for r in unlabeled] == ids[2:5] and all(r["mask"] is None for r in unlabeled)
    assert [r["id"] for r in rows_of(out, "val")] == ids[5:]
    assert no_temporary_files(out)


def test_voc_refuses_to_overwrite_without_the_flag(tmp_path, capsys):
    voc = tmp_path / "VOC2012"
    save_image(voc / "JPEGImages" / "a.jpg", 8, 8, 0)
    save_mask(voc / "SegmentationClass" / "a.png", np.zeros((8, 8)))
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("a\n")
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n")
    args = ["voc", "--root", str(voc), "--fraction", "full", "--out", str(tmp_path / "o")]
    assert convert_main(args) == 0
    assert convert_main(args) == 2
    assert "already holds a dataset" in capsys.readouterr().err
    assert convert_main([*args, "--overwrite"]) == 0


def _cityscapes(tmp_path: Path, kind: str) -> tuple[Path, dict]:
    root = tmp_path / "cityscapes"
    raw = {}
    for part, n in (("train", 4), ("val", 1)):
        for k in range(n):
            image_id = f"aachen_000000_{k:06d}" if part == "train" else f"frankfurt_000000_{k:06d}"
            city = image_id.split("_")[0]
            save_image(root / "leftImg8bit" / part / city / f"{image_id}_leftImg8bit.png", 16, 32, k, "PNG")
            ids = np.zeros((16, 32), dtype=np.uint8)  # labelIds: 0 unlabeled, 7 road, 26 car, 24 person
            ids[:8] = 7
            ids[8:, :10] = 26
            ids[8:, 10:12] = 24
            raw[image_id] = ids
            if kind == "labelIds":
                save_mask(root / "gtFine" / part / city / f"{image_id}_gtFine_labelIds.png", ids)
            else:
                train = np.full_like(ids, 255)
                train[ids == 7], train[ids == 26], train[ids == 24] = 0, 13, 11
                save_mask(root / "gtFine" / part / city / f"{image_id}_gtFine_labelTrainIds.png", train)
    return root, raw


@pytest.mark.parametrize("kind", ["labelIds", "labelTrainIds"])
def test_cityscapes_train_ids_from_either_label_file(tmp_path, kind):
    root, raw = _cityscapes(tmp_path, kind)
    split = tmp_path / "splits" / "cityscapes" / "1"
    split.mkdir(parents=True)
    (split / "labeled.txt").write_text("leftImg8bit/train/aachen/aachen_000000_000002_leftImg8bit.png\n")
    (split / "unlabeled.txt").write_text("")
    out = tmp_path / "out"
    assert (
        convert_main(
            ["cityscapes", "--root", str(root), "--split", f"1={split}", "--fraction", "1_2", "--out", str(out)]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["classes"]) == 19 and manifest["classes"][13]["name"] == "car"
    assert manifest["source"]["labels"] == ("labelIds" if kind == "labelIds" else "trainIds")
    (row,) = rows_of(out, "splits/1/labeled")
    assert row["id"] == "aachen_000000_000002"
    expected = np.full((16, 32), 255, dtype=np.uint8)
    expected[:8], expected[8:, :10], expected[8:, 10:12] = 0, 13, 11  # road, car, person; unlabeled -> 255
    assert np.array_equal(decode_ids(row["mask"]), expected)
    assert len(rows_of(out, "splits/1/unlabeled")) == 3
    assert len(rows_of(out, "splits/1_2/labeled")) == 2 and len(rows_of(out, "splits/1_2/unlabeled")) == 2
    assert [r["id"] for r in rows_of(out, "val")] == ["frankfurt_000000_000000"]


def _folder(tmp_path: Path, rgb_masks: bool = False) -> Path:
    root = tmp_path / "mydata"
    fmts = {"a": "JPEG", "b": "PNG", "c": "BMP", "d": "JPEG", "e": "PNG", "f": "JPEG"}
    for k, (stem, fmt) in enumerate(fmts.items()):
        save_image(root / "images" / f"{stem}.{fmt.lower().replace('jpeg', 'jpg')}", 12, 14, k, fmt)
    colours = [(0, 0, 0), (200, 10, 10), (10, 200, 10)]
    for k, stem in enumerate(["a", "b", "c", "d"]):  # e and f have no mask: unlabelled only
        ids = np.zeros((12, 14), dtype=np.uint8)
        ids[3:6, 2:9] = 1 + k % 2
        if rgb_masks:
            (root / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.array(colours, dtype=np.uint8)[ids]).save(root / "masks" / f"{stem}.png")
        else:
            save_mask(root / "masks" / f"{stem}.png", ids)
    (tmp_path / "classes.txt").write_text("# name R G B\nbackground 0 0 0\nred, 200, 10, 10\ngreen 10 200 10\n")
    return root


@pytest.mark.parametrize("rgb_masks", [False, True])
def test_folder_with_fractions_and_unmasked_images(tmp_path, rgb_masks):
    root = _folder(tmp_path, rgb_masks)
    (tmp_path / "val.txt").write_text("d\n")
    out = tmp_path / "out"
    assert (
        convert_main(
            [
                "folder",
                "--root",
                str(root),
                "--classes",
                str(tmp_path / "classes.txt"),
                "--fraction",
                "1_3",
                "--fraction",
                "full",
                "--val-list",
                str(tmp_path / "val.txt"),
                "--out",
                str(out),
                "--name",
                "mine",
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == "mine" and [c["color"] for c in manifest["classes"]][1] == [200, 10, 10]
    full_lab = rows_of(out, "splits/full/labeled")
    assert sorted(r["id"] for r in full_lab) == ["a", "b", "c"]  # every masked training image
    assert sorted(r["id"] for r in rows_of(out, "splits/full/unlabeled")) == ["e", "f"]
    (one,) = rows_of(out, "splits/1_3/labeled")  # round(3 / 3) = 1, nested inside 'full'
    rest = sorted({"a", "b", "c", "e", "f"} - {one["id"]})
    assert sorted(r["id"] for r in rows_of(out, "splits/1_3/unlabeled")) == rest
    assert all(r["mask"] is None for r in rows_of(out, "splits/1_3/unlabeled"))
    row = next(r for r in full_lab if r["id"] == "c")
    assert decode_ids(row["mask"])[4, 4] == 1 and row["image"][:8] == b"\x89PNG\r\n\x1a\n"  # BMP -> PNG
    assert [r["id"] for r in rows_of(out, "val")] == ["d"]
    assert manifest["splits"]["full"]["labeled"]["class_pixels"][0] > 0


def test_folder_rejects_masks_with_unknown_classes(tmp_path, capsys):
    root = _folder(tmp_path)
    save_mask(root / "masks" / "b.png", np.full((12, 14), 7, dtype=np.uint8))
    code = convert_main(
        [
            "folder",
            "--root",
            str(root),
            "--classes",
            str(tmp_path / "classes.txt"),
            "--fraction",
            "full",
            "--out",
            str(tmp_path / "o"),
            "--val-fraction",
            "0",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "b.png" in err and "[7]" in err and "outside 0..2" in err


def test_synthetic_cli_writes_nested_splits(tmp_path):
    out = tmp_path / "syn"
    assert (
        convert_main(
            [
                "synthetic",
                "--out",
                str(out),
                "--num-train",
                "32",
                "--num-val",
                "4",
                "--image-size",
                "32",
                "--labeled-fractions",
                "1_8",
                "1_2",
                "full",
                "--object-source",
                "procedural",
                "--shard-rows",
                "8",
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    counts = {s: (p["labeled"]["rows"], p["unlabeled"]["rows"]) for s, p in manifest["splits"].items()}
    assert counts == {"1_8": (4, 28), "1_2": (16, 16), "full": (32, 0)}
    small = {r["id"] for r in rows_of(out, "splits/1_8/labeled")}
    assert small < {r["id"] for r in rows_of(out, "splits/1_2/labeled")}
    assert os.path.exists(out / "val" / "part-00000.parquet") and no_temporary_files(out)
