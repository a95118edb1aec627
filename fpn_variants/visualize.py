"""Draw a trained model's detections beside the ground truth on a few images of a dataset.

    python -m fpn_variants.visualize --config-file CFG [--weights W] [--dataset neon_trees_val]
        [--num-images 4] [--score-thresh 0.5] [--output OUTPUT_DIR/detections_val.png] [KEY VALUE ...]

Each row of the written PNG is one image: ground truth on the left, detections with
score ≥ ``--score-thresh`` on the right (Detectron2's ``Visualizer``).
"""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

import numpy as np

from .fileio import write_bytes_atomic

__all__ = ["draw_detections", "main"]


def draw_detections(cfg, weights: str, dataset: str, num_images: int, score_thresh: float, output: str) -> str:
    """Run ``cfg``'s model with ``weights`` on the first ``num_images`` images of ``dataset`` and write
    the side-by-side picture to ``output`` (PNG). Returns ``output``.

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        ValueError: ``num_images < 1``, or the dataset is empty.
    """
    import cv2
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.utils.visualizer import Visualizer

    if num_images < 1:
        raise ValueError(f"num_images={num_images} must be >= 1")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"weights {weights} do not exist: train first (make demo) or pass --weights")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = weights
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = score_thresh
    cfg.freeze()
    from .engine import Predictor
    from .safety import safe_pickle_in_detectron2

    with safe_pickle_in_detectron2():
        predictor = Predictor(cfg)  # every parameter from the checkpoint
    dicts = DatasetCatalog.get(dataset)[:num_images]
    if not dicts:
        raise ValueError(f"dataset {dataset} is empty")
    meta = MetadataCatalog.get(dataset)
    rows = []
    for d in dicts:
        bgr = cv2.imread(d["file_name"])
        if bgr is None:
            raise FileNotFoundError(f"cannot read image {d['file_name']}")
        rgb = bgr[:, :, ::-1]
        gt = Visualizer(rgb, meta, scale=2.0).draw_dataset_dict(d).get_image()
        inst = predictor(bgr)["instances"].to("cpu")
        pred = Visualizer(rgb, meta, scale=2.0).draw_instance_predictions(inst).get_image()
        sep = np.full((gt.shape[0], 8, 3), 255, dtype=np.uint8)
        rows.append(np.concatenate([gt, sep, pred], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 8), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    grid = np.concatenate(rows, axis=0)
    ok, png = cv2.imencode(".png", np.ascontiguousarray(grid[:, :, ::-1]))
    if not ok:
        raise OSError(f"could not encode {output}")
    write_bytes_atomic(output, png.tobytes())
    return output


def main(argv: Optional[Sequence[str]] = None) -> str:
    import fpn_variants  # noqa: F401
    from fpn_variants.config import load_config

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", default=None, help="default: OUTPUT_DIR/model_final.pth")
    p.add_argument("--dataset", default=None, help="default: the first of DATASETS.TEST")
    p.add_argument("--num-images", type=int, default=4)
    p.add_argument("--score-thresh", type=float, default=0.5)
    p.add_argument("--output", default=None, help="default: OUTPUT_DIR/detections_<dataset>.png")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    weights = args.weights or os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    output = args.output or os.path.join(cfg.OUTPUT_DIR, f"detections_{dataset}.png")
    path = draw_detections(cfg, weights, dataset, args.num_images, args.score_thresh, output)
    print(f"detections (right) beside ground truth (left) on {args.num_images} images of {dataset}: {path}")
    return path


if __name__ == "__main__":
    main()
