"""Proposal recall (AR) for RPN-only models, as in Table 1 of the paper.

Why not Detectron2's ``COCOEvaluator`` proposal path: its ``_evaluate_box_proposals`` skips an image
with no proposals (``if len(gt_boxes) == 0 or len(predictions) == 0: continue``), so the ground
truth of such an image is not counted as missed and AR is overestimated. Here every ground-truth box
of every evaluated image counts.

How AR is computed (the protocol of Hosang et al. and Detectron's ``evaluate_box_proposals``):
for each image, keep the top ``limit`` proposals by objectness; match proposals to the non-crowd
ground-truth boxes in the area range greedily and one-to-one (repeatedly take the ground-truth box
whose best remaining IoU is highest, record that IoU, remove both); a ground-truth box left
unmatched (e.g. an image with fewer proposals than boxes, or none) records IoU 0. Recall at IoU
threshold t is the fraction of recorded IoUs ≥ t; AR is the mean recall over t = 0.50:0.05:0.95.
Areas follow COCO: small < 32², medium 32²..96², large > 96² pixels (the annotation's ``area``).
Values are in percent, like Detectron2's.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_json
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import Boxes, pairwise_iou
from detectron2.utils import comm
from pycocotools.coco import COCO

from .fileio import write_json_atomic

__all__ = ["AREA_RANGES", "ProposalRecallEvaluator", "greedy_match_ious", "average_recall"]

AREA_RANGES = OrderedDict(
    [("", (0.0, 1e10)), ("s", (0.0, 32.0**2)), ("m", (32.0**2, 96.0**2)), ("l", (96.0**2, 1e10))]
)
IOU_THRESHOLDS = np.arange(0.5, 0.95 + 1e-5, 0.05)


def greedy_match_ious(proposals: torch.Tensor, gt: torch.Tensor) -> np.ndarray:
    """One IoU per ground-truth box (G,) after greedy one-to-one matching with ``proposals`` (P, 4)
    XYXY pixels; unmatched ground truth gets 0."""
    out = np.zeros(len(gt), dtype=np.float64)
    if len(gt) == 0 or len(proposals) == 0:
        return out
    ious = pairwise_iou(Boxes(proposals), Boxes(gt)).numpy().astype(np.float64)  # (P, G)
    for _ in range(min(ious.shape)):
        best_per_gt = ious.max(axis=0)
        g = int(best_per_gt.argmax())
        if best_per_gt[g] < 0:
            break
        p = int(ious[:, g].argmax())
        out[g] = ious[p, g]
        ious[p, :] = -1
        ious[:, g] = -1
    return out


def average_recall(gt_ious: np.ndarray, thresholds: Sequence[float] = IOU_THRESHOLDS) -> float:
    """Mean over ``thresholds`` of the fraction of ``gt_ious`` at or above it (0 if no ground truth)."""
    if len(gt_ious) == 0:
        return float("nan")
    return float(np.mean([(gt_ious >= t).mean() for t in thresholds]))


class ProposalRecallEvaluator(DatasetEvaluator):
    """AR@limit for every limit and area range, over all images of a dataset (module docstring).

    Expects outputs of Detectron2's ``ProposalNetwork``: ``{"proposals": Instances}`` with
    ``proposal_boxes`` (XYXY, pixels of the original image) and ``objectness_logits``.

    Returns ``{"box_proposals": {"AR@100": ..., "AR@1000": ..., "ARs@1000": ..., ...}}`` (percent),
    Detectron2's names, also written to ``output_dir/box_proposals_recall.json``.

    Raises:
        KeyError: ``dataset_name`` is not registered.
    """

    def __init__(
        self,
        dataset_name: str,
        limits: Sequence[int] = (100, 1000),
        output_dir: Optional[str] = None,
        distributed: bool = True,
    ):
        self._dataset_name = dataset_name
        self._limits = tuple(sorted(limits))
        self._output_dir = output_dir
        self._distributed = distributed
        self._logger = logging.getLogger(__name__)
        meta = MetadataCatalog.get(dataset_name)
        json_file = getattr(meta, "json_file", None)
        if not json_file or not os.path.isfile(json_file):
            json_file = os.path.join(output_dir or ".", f"{dataset_name}_coco_format.json")
            convert_to_coco_json(dataset_name, json_file)
        with contextlib.redirect_stdout(io.StringIO()):
            self._coco = COCO(json_file)
        self.reset()

    def reset(self) -> None:
        self._proposals: Dict[int, torch.Tensor] = {}

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs):
            inst = out["proposals"].to("cpu")
            order = torch.argsort(inst.objectness_logits, descending=True)[: self._limits[-1]]
            self._proposals[int(inp["image_id"])] = inst.proposal_boxes.tensor[order].float()

    def evaluate(self):
        proposals = self._proposals
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(proposals, dst=0)
            if not comm.is_main_process():
                return {}
            proposals = dict(itertools.chain(*[p.items() for p in gathered]))
        img_ids = sorted(self._coco.getImgIds())
        missing = [i for i in img_ids if i not in proposals]
        if missing:
            self._logger.warning(
                "%d of %d images of %s have no proposal output; their ground truth counts as missed",
                len(missing), len(img_ids), self._dataset_name,
            )
        results = OrderedDict()
        counts = {}
        for limit in self._limits:
            for suffix, (lo, hi) in AREA_RANGES.items():
                ious: List[np.ndarray] = []
                for img_id in img_ids:
                    anns = self._coco.loadAnns(self._coco.getAnnIds(imgIds=img_id))
                    gt = [a["bbox"] for a in anns if not a.get("iscrowd", 0) and lo <= a["area"] <= hi]
                    gt_xyxy = torch.tensor(gt, dtype=torch.float32).reshape(-1, 4)
                    gt_xyxy[:, 2:] += gt_xyxy[:, :2]
                    props = proposals.get(img_id, torch.zeros(0, 4))[:limit]
                    ious.append(greedy_match_ious(props, gt_xyxy))
                all_ious = np.concatenate(ious) if ious else np.zeros(0)
                results[f"AR{suffix}@{limit}"] = 100.0 * average_recall(all_ious)
                counts[f"num_gt{suffix}"] = int(len(all_ious))
        self._logger.info(
            "Proposal recall on %s (%d images, %d ground-truth boxes): %s",
            self._dataset_name, len(img_ids), counts["num_gt"],
            ", ".join(f"{k} {v:.1f}" for k, v in results.items()),
        )
        if self._output_dir:
            write_json_atomic(os.path.join(self._output_dir, "box_proposals_recall.json"),
                              {"results": results, "num_images": len(img_ids), **counts})
        return {"box_proposals": dict(results)}
