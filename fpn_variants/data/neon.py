"""NEON aerial tree crowns: a real detection dataset that needs no hub.

The ``deepforest`` 2.1.0 wheel (MIT, on PyPI) ships four NEON RGB orthophoto crops (0.1 m/pixel)
with expert tree-crown boxes in Pascal VOC XML (see ../shared/REFERENCE.md §3):

=========================================  ===========  =====  ======================
image                                      size (px)    boxes  labels
=========================================  ===========  =====  ======================
2019_YELL_2_528000_4978000_image_crop2     2299 x 2472  574    Tree
2019_YELL_2_541000_4977000_image_crop      1249 x 1035  279    Tree
OSBS_029                                   400 x 400    61     Tree
SOAP_061                                   400 x 400    37     Alive / Dead
=========================================  ===========  =====  ======================

:func:`prepare` fetches that one wheel (``pip download --no-deps``), cuts every image into
non-overlapping ``tile_size`` × ``tile_size`` tiles at native resolution (the remainder strip at the
right / bottom edge, narrower than a tile, is dropped) and splits **by region inside every image**:
in each image, tiles are numbered in raster order and every 4th (``k % 4 == 3``) goes to val, the
rest to train (region fold 3). No pixel is in both splits. A box cut by a tile border is clipped to the tile and
kept if at least ``min_visible`` (default 0.5) of its area lies inside, else dropped. All labels
map to one class, ``tree``. Images are written as PNG; annotations as COCO json (``bbox`` in XYWH
pixels, ``area`` = w·h, ``iscrowd`` 0), written atomically.

**Region folds** (cross-validation over regions): fold ``j`` (0..3) puts the tiles with ``k % 4 == j``
in val and the rest in train, so over the four folds every tile is in val exactly once (861 trees
in all against 224 in one val split). Fold 3 is the default split above (the same json files); the
others are registered as ``neon_trees_train_f{j}`` / ``neon_trees_val_f{j}`` (and ``..._f3`` names
the default files), for a sweep row to override ``DATASETS.TRAIN`` / ``DATASETS.TEST`` with.

Why this split: splitting *by image* (train on one image, validate on the others) was measured to
memorise the training image (REFERENCE.md §3: val AP 2.2 with train AP 75.9).

:func:`register_neon_trees` registers ``neon_trees_train`` / ``neon_trees_val`` in Detectron2's
``DatasetCatalog`` (done on ``import fpn_variants``, lazily: files are read when the dataset is
used). Run ``python -m fpn_variants.data.neon`` (``make data``) once to create the files.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..fileio import write_bytes_atomic

logger = logging.getLogger(__name__)

__all__ = [
    "DEEPFOREST_SPEC",
    "SOURCE_IMAGES",
    "SPLITS",
    "default_root",
    "fetch_wheel",
    "read_voc",
    "tile_annotations",
    "FOLDS",
    "DEFAULT_FOLD",
    "dataset_name",
    "prepare",
    "load_neon_trees",
    "register_neon_trees",
]

DEEPFOREST_SPEC = "deepforest==2.1.0"
SOURCE_IMAGES = (
    "2019_YELL_2_528000_4978000_image_crop2",
    "2019_YELL_2_541000_4977000_image_crop",
    "OSBS_029",
    "SOAP_061",
)
SPLITS = ("train", "val")
FOLDS = 4  # region folds: val = tiles with k % FOLDS == fold
DEFAULT_FOLD = 3  # neon_trees_train / neon_trees_val
CLASSES = ["tree"]
DEFAULT_TILE_SIZE = 200
DEFAULT_MIN_VISIBLE = 0.5
FORMAT_VERSION = 2  # 2: the region folds' json files


def dataset_name(split: str, fold: Optional[int] = None) -> str:
    """The registered name of ``split`` in region ``fold``: ``neon_trees_val`` (fold None),
    ``neon_trees_val_f0`` ... ``neon_trees_val_f3`` (fold 3 = the default split's files).

    Raises:
        ValueError: unknown ``split`` or ``fold`` not in 0..3.
    """
    _check_split_fold(split, DEFAULT_FOLD if fold is None else fold)
    return f"neon_trees_{split}" if fold is None else f"neon_trees_{split}_f{fold}"


def _check_split_fold(split: str, fold: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not valid; valid: {', '.join(SPLITS)}")
    if not isinstance(fold, int) or not 0 <= fold < FOLDS:
        raise ValueError(f"fold={fold!r} is not valid; valid: 0..{FOLDS - 1} (val = tiles with k % {FOLDS} == fold; "
                         f"{DEFAULT_FOLD} is the default split)")


def default_root() -> str:
    """Folder holding ``neon_trees/``: ``$FPN_VARIANTS_DATASETS`` or ``./datasets`` (Detectron2's
    convention for ``$DETECTRON2_DATASETS``)."""
    return os.path.join(os.environ.get("FPN_VARIANTS_DATASETS", "datasets"), "neon_trees")


def fetch_wheel(cache_dir: str, spec: str = DEEPFOREST_SPEC) -> str:
    """Return the path of the ``deepforest`` wheel in ``cache_dir``, downloading it with
    ``pip download --no-deps`` if absent (about 20 MB, from the package registry).

    Raises:
        RuntimeError: pip failed (e.g. no network), or the file is not a valid zip.
    """
    version = spec.split("==")[-1]
    pattern = os.path.join(cache_dir, f"deepforest-{version}-*.whl")
    found = sorted(glob.glob(pattern))
    if not found:
        os.makedirs(cache_dir, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", spec, "-d", cache_dir]
        logger.info("fetching %s: %s", spec, " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(glob.glob(pattern))
        if proc.returncode != 0 or not found:
            raise RuntimeError(f"could not download {spec} with `{' '.join(cmd)}`:\n{proc.stderr.strip()[-2000:]}")
    wheel = found[-1]
    if not zipfile.is_zipfile(wheel):
        raise RuntimeError(f"{wheel} is not a valid wheel (zip); delete it and run again to re-download")
    return wheel


def read_voc(xml_path: str) -> Tuple[int, int, np.ndarray]:
    """Read a Pascal VOC annotation. Returns ``(width, height, boxes)`` with ``boxes`` a float
    array (K, 4) of XYXY pixel coordinates, clipped to the image.

    Raises:
        FileNotFoundError: ``xml_path`` does not exist.
        ValueError: the XML is malformed, lacks ``size``, or a box is not a number.
    """
    if not os.path.isfile(xml_path):
        raise FileNotFoundError(f"annotation file {xml_path} does not exist")
    try:
        root = ET.parse(xml_path).getroot()
        width = int(root.findtext("size/width"))
        height = int(root.findtext("size/height"))
        boxes = []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            boxes.append([float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
    except (ET.ParseError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{xml_path} is not a valid Pascal VOC annotation: {e}") from e
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    arr[:, 0::2] = arr[:, 0::2].clip(0, width)
    arr[:, 1::2] = arr[:, 1::2].clip(0, height)
    return width, height, arr


@dataclass
class Tile:
    """One tile: its origin (x0, y0) in the source image, size, split, and boxes (XYXY, tile coords)."""

    source: str
    index: int
    x0: int
    y0: int
    size: int
    split: str
    boxes: np.ndarray

    @property
    def file_name(self) -> str:
        return f"{self.source}_x{self.x0:04d}_y{self.y0:04d}.png"


def tile_annotations(
    source: str,
    width: int,
    height: int,
    boxes: np.ndarray,
    tile_size: int = DEFAULT_TILE_SIZE,
    min_visible: float = DEFAULT_MIN_VISIBLE,
) -> List[Tile]:
    """Cut an image of ``width`` × ``height`` pixels into non-overlapping tiles and assign splits
    (module docstring). Boxes with zero area are dropped.

    Raises:
        ValueError: ``tile_size`` larger than the image or < 32, or ``min_visible`` not in (0, 1].
    """
    if tile_size < 32 or tile_size > min(width, height):
        raise ValueError(f"tile_size={tile_size} must be in [32, {min(width, height)}] for {source} ({width}x{height})")
    if not 0 < min_visible <= 1:
        raise ValueError(f"min_visible={min_visible} must be in (0, 1]")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    tiles = []
    k = 0
    for y0 in range(0, height - tile_size + 1, tile_size):
        for x0 in range(0, width - tile_size + 1, tile_size):
            clipped = boxes.copy()
            clipped[:, 0::2] = (clipped[:, 0::2] - x0).clip(0, tile_size)
            clipped[:, 1::2] = (clipped[:, 1::2] - y0).clip(0, tile_size)
            vis = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
            keep = (areas > 0) & (vis > 0) & (vis >= min_visible * areas)
            split = "val" if k % FOLDS == DEFAULT_FOLD else "train"
            tiles.append(Tile(source, k, x0, y0, tile_size, split, clipped[keep]))
            k += 1
    return tiles


def _in_split(t: Tile, split: str, fold: int) -> bool:
    return (t.index % FOLDS == fold) == (split == "val")


def _coco_json(tiles: Sequence[Tile], split: str, fold: int = DEFAULT_FOLD) -> dict:
    images, annotations = [], []
    for image_id, t in enumerate((t for t in tiles if _in_split(t, split, fold)), start=1):
        images.append({"id": image_id, "file_name": t.file_name, "width": t.size, "height": t.size})
        for b in t.boxes:
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [float(b[0]), float(b[1]), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    return {
        "info": {
            "description": f"NEON tree crowns from {DEEPFOREST_SPEC} (deepforest/data), {split} split of "
            "fpn_variants.data.neon (tiles split by region inside each image)",
        },
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "tree"}],
    }


def _json_path(root: str, split: str, fold: int = DEFAULT_FOLD) -> str:
    """The json of ``split`` in region ``fold``; the default fold's are ``neon_trees_{split}.json``."""
    return os.path.join(root, "annotations", f"{_file_stem(split, fold)}.json")


def _file_stem(split: str, fold: int) -> str:
    """The dataset name whose json holds ``split`` of ``fold`` (the default fold: the plain name)."""
    return dataset_name(split, None if fold == DEFAULT_FOLD else fold)


def _all_json_paths(root: str) -> List[str]:
    return [_json_path(root, s, j) for j in range(FOLDS) for s in SPLITS]


def _manifest(tile_size: int, min_visible: float) -> dict:
    return {"format": FORMAT_VERSION, "source": DEEPFOREST_SPEC, "tile_size": tile_size, "min_visible": min_visible}


def prepare(
    root: Optional[str] = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    min_visible: float = DEFAULT_MIN_VISIBLE,
    cache_dir: Optional[str] = None,
    wheel: Optional[str] = None,
) -> Dict[str, str]:
    """Create ``root/images/*.png``, ``root/annotations/neon_trees_{train,val}.json`` and the other
    region folds' ``neon_trees_{train,val}_f{0,1,2}.json``.

    Idempotent: if the files exist for the same settings (``root/manifest.json``), nothing is done.
    Returns ``{split: json path}``.

    Args:
        root: output folder; default :func:`default_root`.
        tile_size: tile side in pixels (default 200).
        min_visible: fraction of a box's area that must lie in a tile to keep it there.
        cache_dir: where the wheel is downloaded (default ``root/../.cache``).
        wheel: an already downloaded ``deepforest`` wheel to read instead of downloading.

    Raises:
        RuntimeError: the wheel cannot be fetched or lacks the expected files.
        ValueError: an annotation is malformed or an image cannot be decoded.
    """
    import cv2

    root = root or default_root()
    manifest_path = os.path.join(root, "manifest.json")
    want = _manifest(tile_size, min_visible)
    if os.path.isfile(manifest_path):
        try:
            with open(manifest_path) as f:
                have = json.load(f)
        except (OSError, ValueError):
            have = None
        if have == want and all(os.path.isfile(p) for p in _all_json_paths(root)):
            logger.info("NEON trees already prepared in %s", root)
            return {s: _json_path(root, s) for s in SPLITS}

    wheel = wheel or fetch_wheel(cache_dir or os.path.join(os.path.dirname(os.path.abspath(root)), ".cache"))
    image_dir = os.path.join(root, "images")
    os.makedirs(image_dir, exist_ok=True)
    all_tiles: List[Tile] = []
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for src in SOURCE_IMAGES:
            png, xml = f"deepforest/data/{src}.png", f"deepforest/data/{src}.xml"
            for member in (png, xml):
                if member not in names:
                    raise RuntimeError(f"{wheel} lacks {member}: is it {DEEPFOREST_SPEC}?")
            with tempfile.TemporaryDirectory() as tmp:
                xml_path = zf.extract(xml, tmp)
                width, height, boxes = read_voc(xml_path)
            buf = np.frombuffer(zf.read(png), dtype=np.uint8)
            image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"{png} in {wheel} could not be decoded as an image")
            if image.shape[:2] != (height, width):
                raise ValueError(f"{png} is {image.shape[1]}x{image.shape[0]} but its XML says {width}x{height}")
            tiles = tile_annotations(src, width, height, boxes, tile_size, min_visible)
            for t in tiles:
                crop = image[t.y0 : t.y0 + t.size, t.x0 : t.x0 + t.size]
                ok, enc = cv2.imencode(".png", crop)
                if not ok:
                    raise ValueError(f"could not encode tile {t.file_name}")
                write_bytes_atomic(os.path.join(image_dir, t.file_name), enc.tobytes())
            all_tiles.extend(tiles)
            logger.info("%s: %dx%d, %d boxes -> %d tiles", src, width, height, len(boxes), len(tiles))

    out = {}
    for fold in range(FOLDS):
        for split in SPLITS:
            data = _coco_json(all_tiles, split, fold)
            write_bytes_atomic(_json_path(root, split, fold), json.dumps(data).encode())
            if fold == DEFAULT_FOLD:
                out[split] = _json_path(root, split)
            logger.info("%s: %d tiles, %d boxes", dataset_name(split, fold), len(data["images"]), len(data["annotations"]))
    write_bytes_atomic(manifest_path, json.dumps(want, indent=1).encode())
    return out


def load_neon_trees(split: str, root: Optional[str] = None, fold: int = DEFAULT_FOLD) -> List[dict]:
    """Load a prepared split of region ``fold`` as Detectron2 dataset dicts (via ``load_coco_json``).

    Raises:
        ValueError: unknown ``split`` or ``fold``.
        FileNotFoundError: the json or an image is missing (message says how to create them).
        ValueError: the json is corrupt or truncated.
    """
    from detectron2.data.datasets import load_coco_json

    _check_split_fold(split, fold)
    root = root or default_root()
    path = _json_path(root, split, fold)
    if not os.path.isfile(path):
        where = ("$FPN_VARIANTS_DATASETS=" + os.environ["FPN_VARIANTS_DATASETS"]) if "FPN_VARIANTS_DATASETS" in os.environ \
            else f"./datasets of the working directory {os.getcwd()} ($FPN_VARIANTS_DATASETS is unset)"
        raise FileNotFoundError(
            f"{os.path.abspath(path)} does not exist: the NEON data is looked for under {where}. If it was "
            f"prepared elsewhere (e.g. by `make data` in the repository), run from there or set "
            f"FPN_VARIANTS_DATASETS to the folder holding neon_trees/; else create it with `make data` "
            f"(python -m fpn_variants.data.neon --root {root})"
        )
    try:
        with open(path) as f:
            json.load(f)
    except ValueError as e:
        raise ValueError(f"{path} is corrupt or truncated ({e}); delete {root} and run `make data` again") from e
    dicts = load_coco_json(path, os.path.join(root, "images"), _file_stem(split, fold))
    for d in dicts:
        if not os.path.isfile(d["file_name"]):
            raise FileNotFoundError(f"image {d['file_name']} listed in {path} is missing; run `make data` again")
    return dicts


def register_neon_trees(root: Optional[str] = None) -> None:
    """Register ``neon_trees_train`` / ``neon_trees_val`` and the region folds'
    ``neon_trees_{train,val}_f{0..3}`` (one class, ``tree``; evaluator ``coco``) in Detectron2's
    catalogs; files are read only when a dataset is used. Re-registering is a no-op."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    root = root or default_root()
    for fold in (None, *range(FOLDS)):
        for split in SPLITS:
            name = dataset_name(split, fold)
            if name in DatasetCatalog.list():
                continue
            f = DEFAULT_FOLD if fold is None else fold
            DatasetCatalog.register(name, lambda split=split, f=f: load_neon_trees(split, root, f))
            MetadataCatalog.get(name).set(
                thing_classes=list(CLASSES),
                json_file=_json_path(root, split, f),
                image_root=os.path.join(root, "images"),
                evaluator_type="coco",
            )


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="output folder (default: $FPN_VARIANTS_DATASETS/neon_trees or datasets/neon_trees)")
    parser.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE, help="tile side in pixels")
    parser.add_argument("--min-visible", type=float, default=DEFAULT_MIN_VISIBLE, help="keep a cut box if this fraction lies in the tile")
    parser.add_argument("--wheel", default=None, help="use this deepforest wheel instead of downloading it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = prepare(args.root, args.tile_size, args.min_visible, wheel=args.wheel)
    for split, path in paths.items():
        with open(path) as f:
            data = json.load(f)
        print(f"neon_trees_{split}: {len(data['images'])} tiles, {len(data['annotations'])} boxes -> {path}")


if __name__ == "__main__":
    main()
