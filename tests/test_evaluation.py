"""Proposal recall: greedy matching, AR over IoU thresholds, images without proposals count."""
import json

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.structures import Boxes, Instances

from fpn_variants.evaluation import ProposalRecallEvaluator, average_recall, greedy_match_ious


def test_greedy_matching_is_one_to_one():
    gt = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    # one proposal covers gt 0 exactly; it must not be reused for gt 1
    props = torch.tensor([[0, 0, 10, 10]], dtype=torch.float32)
    np.testing.assert_allclose(greedy_match_ious(props, gt), [1.0, 0.0])
    props = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 35]], dtype=torch.float32)
    np.testing.assert_allclose(greedy_match_ious(props, gt), [1.0, 100 / 150])
    np.testing.assert_allclose(greedy_match_ious(torch.zeros(0, 4), gt), [0.0, 0.0])


def test_average_recall_over_thresholds():
    # IoU 1 passes all 10 thresholds, 0.72 passes 0.50..0.70 (5 of 10), 0 none
    assert average_recall(np.array([1.0, 0.72, 0.0])) == pytest.approx((1 + 0.5 + 0) / 3)
    assert np.isnan(average_recall(np.zeros(0)))


@pytest.fixture
def two_image_dataset(tmp_path):
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 100}, {"id": 2, "file_name": "b.png", "width": 100, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 50, 50], "area": 2500, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = tmp_path / "d.json"
    path.write_text(json.dumps(coco))
    name = f"recall_test_{tmp_path.name}"
    register_coco_instances(name, {}, str(path), str(tmp_path))
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_image_without_proposals_counts_as_missed(two_image_dataset, tmp_path):
    ev = ProposalRecallEvaluator(two_image_dataset, limits=(1, 10), output_dir=str(tmp_path), distributed=False)
    ev.reset()
    inst = Instances((100, 100))
    inst.proposal_boxes = Boxes(torch.tensor([[50.0, 50, 60, 60], [0.0, 0, 10, 10]]))
    inst.objectness_logits = torch.tensor([2.0, 1.0])  # the wrong box scores higher
    ev.process([{"image_id": 1}], [{"proposals": inst}])
    empty = Instances((100, 100))
    empty.proposal_boxes = Boxes(torch.zeros(0, 4))
    empty.objectness_logits = torch.zeros(0)
    ev.process([{"image_id": 2}], [{"proposals": empty}])
    res = ev.evaluate()["box_proposals"]
    # image 1's box is found at limit 10, not at limit 1; image 2 (no proposals) is missed either way
    assert res["AR@10"] == pytest.approx(50.0)
    assert res["AR@1"] == pytest.approx(0.0)
    assert res["ARs@10"] == pytest.approx(100.0)  # area 100 < 32^2: small
    assert res["ARm@10"] == pytest.approx(0.0)  # area 2500: medium, missed
    assert np.isnan(res["ARl@10"])
    saved = json.loads((tmp_path / "box_proposals_recall.json").read_text())
    assert saved["num_gt"] == 2 and saved["num_images"] == 2
