"""Dump an RPN's proposals in Detectron2's precomputed-proposal format (Table 2's fixed proposals).

Usage::

    python -m fpn_variants.proposals --config-file configs/NEON/rpn_c_fpn.yaml \
        --output-dir output/neon/proposals MODEL.WEIGHTS output/neon/rpn_c_fpn/model_final.pth

For every dataset (default: ``DATASETS.TRAIN`` + ``DATASETS.TEST`` of the config) it runs the
``ProposalNetwork`` in inference mode at the test resolution (``INPUT.MIN_SIZE_TEST``) and writes
``OUTPUT_DIR/proposals_<dataset>.pkl``: a dict with ``ids`` (image ids), ``boxes`` (one float32
array (R, 4) per image, XYXY in *original image* pixels, sorted by objectness), ``objectness_logits``
(float32 (R,)), ``bbox_mode`` (``BoxMode.XYXY_ABS``) — what Detectron2 reads with
``MODEL.LOAD_PROPOSALS`` and ``DATASETS.PROPOSAL_FILES_TRAIN / _TEST`` (at most
``RPN.POST_NMS_TOPK_TEST`` boxes per image). With ``SOLVER.AMP.ENABLED`` the RPN runs under autocast,
as in evaluation (:mod:`fpn_variants.amp`). Files are written atomically; an existing file is kept
unless ``--force``. The paper's protocol (§5.2.1): every Fast R-CNN row of Table 2 uses the same
proposals, those of the Table 1(c) RPN.
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
from typing import Dict, Optional, Sequence

__all__ = ["proposal_file", "dump_proposals", "cli"]


def proposal_file(output_dir: str, dataset: str) -> str:
    """The path :func:`dump_proposals` writes for ``dataset``."""
    return os.path.join(output_dir, f"proposals_{dataset}.pkl")


def dump_proposals(cfg, output_dir: str, datasets: Optional[Sequence[str]] = None, force: bool = False) -> Dict[str, str]:
    """Run the RPN of ``cfg`` (weights ``cfg.MODEL.WEIGHTS``) over ``datasets`` and write proposal files.

    Args:
        cfg: a frozen config whose ``MODEL.META_ARCHITECTURE`` is ``"ProposalNetwork"``.
        output_dir: folder of the ``proposals_<dataset>.pkl`` files.
        datasets: registered dataset names (default ``DATASETS.TRAIN + DATASETS.TEST``).
        force: rewrite files that already exist.

    Returns:
        ``{dataset: path}``.

    Raises:
        ValueError: the config is not an RPN-only model, or ``MODEL.WEIGHTS`` is empty.
        KeyError: a dataset is not registered (Detectron2's error, naming the registered ones).
    """
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.structures import BoxMode
    from tqdm import tqdm

    from .amp import autocast_inference
    from .engine import Trainer, is_proposal_only
    from .fileio import write_bytes_atomic
    from .safety import safe_pickle_in_detectron2

    if not is_proposal_only(cfg):
        raise ValueError(f"MODEL.META_ARCHITECTURE={cfg.MODEL.META_ARCHITECTURE!r}: proposals are dumped from an "
                         "RPN-only model; valid: 'ProposalNetwork' (e.g. configs/NEON/rpn_c_fpn.yaml)")
    if not cfg.MODEL.WEIGHTS:
        raise ValueError("MODEL.WEIGHTS is empty: give the trained RPN's checkpoint (e.g. .../model_final.pth)")
    datasets = list(datasets or (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST))
    os.makedirs(output_dir, exist_ok=True)
    model = None
    out = {}
    for name in datasets:
        path = proposal_file(output_dir, name)
        out[name] = path
        if os.path.isfile(path) and not force:
            continue
        if model is None:
            model = Trainer.build_model(cfg)
            with safe_pickle_in_detectron2():
                DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
            model.eval()
            model = autocast_inference(model, cfg)  # SOLVER.AMP.ENABLED: as in training's evaluation
        ids, boxes, logits = [], [], []
        loader = Trainer.build_test_loader(cfg, name)
        with torch.inference_mode():
            for inputs in tqdm(loader, desc=f"proposals {name}", unit="img", disable=None):
                for inp, res in zip(inputs, model(inputs)):
                    p = res["proposals"].to("cpu")
                    ids.append(inp["image_id"])
                    boxes.append(p.proposal_boxes.tensor.numpy().astype("float32"))
                    logits.append(p.objectness_logits.numpy().astype("float32"))
        data = {"ids": ids, "boxes": boxes, "objectness_logits": logits, "bbox_mode": BoxMode.XYXY_ABS.value}
        write_bytes_atomic(path, pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    return out


def cli(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fpn_variants.proposals", description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, help="the RPN's config (ProposalNetwork)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--datasets", nargs="+", help="default: DATASETS.TRAIN and DATASETS.TEST of the config")
    p.add_argument("--force", action="store_true", help="rewrite existing proposal files")
    p.add_argument("opts", nargs="*", help="KEY VALUE overrides (MODEL.WEIGHTS ...)")
    a = p.parse_intermixed_args(argv)
    import fpn_variants  # noqa: F401  registers backbones and datasets
    from .config import load_config

    cfg = load_config(a.config_file, a.opts)
    cfg.freeze()
    try:
        paths = dump_proposals(cfg, a.output_dir, a.datasets, a.force)
    except ValueError as e:
        p.error(str(e))
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
