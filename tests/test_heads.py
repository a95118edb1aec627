"""Every stock Detectron2 head on every pyramid (configs/heads/*.yaml with MODEL.BACKBONE.NAME swapped):
the model builds, one training step on a synthetic batch (boxes, polygon masks, 17 keypoints, a
semantic map) gives finite losses and a gradient to every trainable parameter (no unused parameters,
so DistributedDataParallel needs no find_unused_parameters), and inference returns the head's outputs.
R-18 from scratch, d = 32, narrow heads, 64x96 images: CPU seconds per case."""
import glob
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, Keypoints, PolygonMasks
from detectron2.utils.events import EventStorage

from fpn_variants.config import load_config
from fpn_variants.modeling import PRESETS, backbone_name

from conftest import REPO

HEADS = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "heads", "*.yaml")))
SMALL = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
         "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
         "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", "(32, 32)", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
         "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0",
         "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]


def test_every_head_config_is_covered():
    assert [os.path.basename(h) for h in HEADS] == [
        "cascade_mask_rcnn_fpn.yaml", "keypoint_rcnn_fpn.yaml", "mask_rcnn_fpn.yaml", "panoptic_fpn.yaml", "retinanet_fpn.yaml"]


def synthetic_batch(num_classes, sem_seg_classes, seed=0):
    """Two 64x96 images with 3 boxes each, their polygon masks (the box as a polygon), 17 visible
    keypoints inside each box and a semantic map."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(2):
        h, w = 64, 96
        xy = torch.rand(3, 2, generator=g) * torch.tensor([w - 30.0, h - 30.0])
        wh = 10 + torch.rand(3, 2, generator=g) * 18
        boxes = torch.cat([xy, xy + wh], 1)
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(boxes)
        inst.gt_classes = torch.randint(num_classes, (3,), generator=g)
        inst.gt_masks = PolygonMasks([[[x0, y0, x1, y0, x1, y1, x0, y1]] for x0, y0, x1, y1 in boxes.tolist()])
        kp = boxes[:, None, :2] + torch.rand(3, 17, 2, generator=g) * wh[:, None]
        inst.gt_keypoints = Keypoints(torch.cat([kp, torch.full((3, 17, 1), 2.0)], 2))
        batch.append({"image": torch.rand(3, h, w, generator=g) * 255, "instances": inst, "height": h, "width": w,
                      "sem_seg": torch.randint(sem_seg_classes, (h, w), generator=g)})
    return batch


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("head", HEADS, ids=[os.path.basename(h)[:-5] for h in HEADS])
def test_head_trains_and_infers_on_every_pyramid(head, preset):
    cfg = load_config(os.path.join(REPO, head), [*SMALL, "MODEL.BACKBONE.NAME", backbone_name(preset)])
    torch.manual_seed(0)
    model = build_model(cfg)
    batch = synthetic_batch(cfg.MODEL.ROI_HEADS.NUM_CLASSES if cfg.MODEL.META_ARCHITECTURE != "RetinaNet"
                            else cfg.MODEL.RETINANET.NUM_CLASSES, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    model.train()
    with EventStorage(0):  # Detectron2's heads log training statistics into it
        losses = model(batch)
    expected = {"RetinaNet": {"loss_cls", "loss_box_reg"}}.get(cfg.MODEL.META_ARCHITECTURE, {"loss_rpn_cls", "loss_rpn_loc"})
    assert expected <= set(losses), sorted(losses)
    if cfg.MODEL.MASK_ON:
        assert "loss_mask" in losses
    if cfg.MODEL.KEYPOINT_ON:
        assert "loss_keypoint" in losses
    if cfg.MODEL.META_ARCHITECTURE == "PanopticFPN":
        assert "loss_sem_seg" in losses
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f"parameters without a gradient: {unused}"
    assert any(n.startswith("backbone.fpn_") or n.startswith("backbone.post_paths") for n, p in model.named_parameters())

    model.eval()
    with torch.no_grad():
        out = model([{k: v for k, v in x.items() if k in ("image", "height", "width")} for x in batch])
    assert len(out) == 2
    inst = out[0]["instances"]
    assert len(inst) > 0 and inst.pred_boxes.tensor.shape[1] == 4
    if cfg.MODEL.MASK_ON:
        assert inst.pred_masks.shape[-2:] == (64, 96)
    if cfg.MODEL.KEYPOINT_ON:
        assert inst.pred_keypoints.shape[1:] == (17, 3)
    if cfg.MODEL.META_ARCHITECTURE == "PanopticFPN":
        assert out[0]["sem_seg"].shape == (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 64, 96)
        assert out[0]["panoptic_seg"][0].shape == (64, 96)
