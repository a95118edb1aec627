"""The NEON tree-crown data step: VOC parsing, tiling and split, COCO json, registration, errors."""
import json
import re
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from fpn_variants.data import neon


def test_read_voc(tmp_path):
    p = tmp_path / "a.xml"
    p.write_text(
        "<annotation><size><width>100</width><height>80</height></size>"
        "<object><name>Tree</name><bndbox><xmin>10</xmin><ymin>5</ymin><xmax>30</xmax><ymax>90</ymax></bndbox></object>"
        "</annotation>"
    )
    w, h, boxes = neon.read_voc(str(p))
    assert (w, h) == (100, 80)
    np.testing.assert_array_equal(boxes, [[10, 5, 30, 80]])  # clipped to the image


def test_read_voc_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.xml"):
        neon.read_voc(str(tmp_path / "missing.xml"))
    bad = tmp_path / "bad.xml"
    bad.write_text("<annotation><size><width>10</width>")
    with pytest.raises(ValueError, match="not a valid Pascal VOC"):
        neon.read_voc(str(bad))
    nosize = tmp_path / "nosize.xml"
    nosize.write_text("<annotation></annotation>")
    with pytest.raises(ValueError, match="not a valid Pascal VOC"):
        neon.read_voc(str(nosize))


def test_tiling_split_and_clipping():
    boxes = np.array(
        [
            [10, 10, 50, 50],  # inside tile (0, 0)
            [90, 10, 130, 50],  # 25% in tile (0,0), 75% in tile (100,0): kept only there
            [50, 50, 150, 150],  # 25% in each of 4 tiles: dropped everywhere at min_visible 0.5
            [60, 60, 60, 80],  # zero area: dropped
        ],
        dtype=float,
    )
    tiles = neon.tile_annotations("img", 450, 420, boxes, tile_size=100, min_visible=0.5)
    assert len(tiles) == 4 * 4  # the 50-px and 20-px remainders are dropped
    assert [t.split for t in tiles[:8]] == ["train", "train", "train", "val"] * 2
    by_origin = {(t.x0, t.y0): t for t in tiles}
    np.testing.assert_array_equal(by_origin[(0, 0)].boxes, [[10, 10, 50, 50]])
    np.testing.assert_array_equal(by_origin[(100, 0)].boxes, [[0, 10, 30, 50]])
    assert sum(len(t.boxes) for t in tiles) == 2
    # tiles never overlap, so no pixel is in both splits
    origins = [(t.x0, t.y0) for t in tiles]
    assert len(set(origins)) == len(origins) and all(x % 100 == 0 and y % 100 == 0 for x, y in origins)
    with pytest.raises(ValueError, match="tile_size=500"):
        neon.tile_annotations("img", 450, 420, boxes, tile_size=500)
    with pytest.raises(ValueError, match="min_visible=0"):
        neon.tile_annotations("img", 450, 420, boxes, min_visible=0)


def test_prepared_dataset_is_disjoint_and_registered(neon_root):
    data = {}
    for split in neon.SPLITS:
        with open(os.path.join(neon_root, "annotations", f"neon_trees_{split}.json")) as f:
            data[split] = json.load(f)
    train_files = {im["file_name"] for im in data["train"]["images"]}
    val_files = {im["file_name"] for im in data["val"]["images"]}
    assert not train_files & val_files
    # every source image contributes to both splits (split by region, not by image)
    for src in neon.SOURCE_IMAGES:
        assert any(f.startswith(src) for f in train_files) and any(f.startswith(src) for f in val_files), src
    assert len(train_files) > 2 * len(val_files) > 0
    for split in neon.SPLITS:
        for a in data[split]["annotations"]:
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 200 and y + h <= 200
            assert a["area"] == pytest.approx(w * h)
    assert len(data["train"]["annotations"]) > 500 and len(data["val"]["annotations"]) > 150
    dicts = DatasetCatalog.get("neon_trees_val")
    assert len(dicts) == len(val_files) and all(os.path.isfile(d["file_name"]) for d in dicts)
    assert MetadataCatalog.get("neon_trees_val").thing_classes == ["tree"]


def test_region_folds_put_every_tile_in_val_exactly_once(neon_root):
    """Fold j: val = tiles with k % 4 == j. Over the 4 folds every tile (and tree) is in val once;
    within a fold train and val are disjoint and cover every tile; fold 3 is the default split."""
    def load(split, fold):
        return {d["file_name"]: len(d["annotations"]) for d in DatasetCatalog.get(neon.dataset_name(split, fold))}

    default_val, default_train = load("val", None), load("train", None)
    all_tiles = {**default_train, **default_val}
    seen_val = {}
    for fold in range(neon.FOLDS):
        train, val = load("train", fold), load("val", fold)
        assert not set(train) & set(val) and {**train, **val} == all_tiles, fold
        for f in val:
            assert f not in seen_val, f"{f} in val of folds {seen_val.get(f)} and {fold}"
            seen_val[f] = fold
        for src in neon.SOURCE_IMAGES:  # every fold splits every source image by region
            assert any(f.startswith(os.path.join(neon_root, "images", src)) for f in val), (fold, src)
    assert set(seen_val) == set(all_tiles)
    assert sum(all_tiles.values()) == 861  # every tree is in val once over the folds (224 in one split)
    assert load("val", 3) == default_val and load("train", 3) == default_train
    assert MetadataCatalog.get("neon_trees_val_f3").json_file == MetadataCatalog.get("neon_trees_val").json_file
    with pytest.raises(ValueError, match=r"fold=4 is not valid; valid: 0..3"):
        neon.dataset_name("val", 4)
    with pytest.raises(ValueError, match=r"fold=-1 is not valid"):
        neon.load_neon_trees("val", neon_root, fold=-1)


def test_prepare_is_idempotent(neon_root):
    path = os.path.join(neon_root, "annotations", "neon_trees_train.json")
    before = os.stat(path).st_mtime_ns
    neon.prepare(neon_root)
    assert os.stat(path).st_mtime_ns == before


def test_missing_and_corrupt_files_give_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="make data"):
        neon.load_neon_trees("train", str(tmp_path))
    # run from another directory: the message names the working directory and the variable
    monkeypatch.delenv("FPN_VARIANTS_DATASETS", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"working directory {re.escape(str(tmp_path))}.*FPN_VARIANTS_DATASETS"):
        neon.load_neon_trees("train")
    monkeypatch.setenv("FPN_VARIANTS_DATASETS", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match=r"\$FPN_VARIANTS_DATASETS=.*elsewhere"):
        neon.load_neon_trees("train")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "neon_trees_val.json").write_text('{"images": [{"id": 1, "file_na')
    with pytest.raises(ValueError, match="corrupt or truncated"):
        neon.load_neon_trees("val", str(tmp_path))
    with pytest.raises(ValueError, match="split='test'"):
        neon.load_neon_trees("test", str(tmp_path))
    (tmp_path / "annotations" / "neon_trees_val.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "gone.png", "width": 200, "height": 200}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}],
                "categories": [{"id": 1, "name": "tree"}],
            }
        )
    )
    with pytest.raises(FileNotFoundError, match="gone.png"):
        neon.load_neon_trees("val", str(tmp_path))


def test_corrupt_wheel_is_reported(tmp_path):
    (tmp_path / "deepforest-2.1.0-py3-none-any.whl").write_bytes(b"not a zip")
    with pytest.raises(RuntimeError, match="not a valid wheel"):
        neon.fetch_wheel(str(tmp_path))
