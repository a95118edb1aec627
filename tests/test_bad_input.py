"""Bad input gets a clear error or is handled the documented way (README "Bad input"): images with
no boxes, zero-area boxes, a missing image file, a corrupt annotation json, a checkpoint of another
variant, a non-finite loss."""
import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data.build import get_detection_dataset_dicts
from detectron2.modeling import build_model

from fpn_variants.config import load_config
from fpn_variants.engine import load_weights_for_eval

from conftest import REPO, small_cfg

CFG = os.path.join(REPO, "configs", "NEON", "faster_rcnn_c_fpn.yaml")


@pytest.fixture(scope="module")
def odd_coco(neon_root, tmp_path_factory):
    """Three NEON val tiles as a COCO json: one without boxes, one with an extra zero-area box."""
    with open(os.path.join(neon_root, "annotations", "neon_trees_val.json")) as f:
        coco = json.load(f)
    with_boxes = {a["image_id"] for a in coco["annotations"]}
    imgs = [im for im in coco["images"] if im["id"] in with_boxes][:3]
    ids = {im["id"] for im in imgs}
    anns = [a for a in coco["annotations"] if a["image_id"] in ids and a["image_id"] != imgs[0]["id"]]
    zero = copy.deepcopy(next(a for a in anns if a["image_id"] == imgs[1]["id"]))
    zero.update(id=10**6, bbox=[zero["bbox"][0], zero["bbox"][1], 0.0, 5.0], area=0.0)
    anns.append(zero)
    out = tmp_path_factory.mktemp("coco") / "odd.json"
    out.write_text(json.dumps(dict(coco, images=imgs, annotations=anns)))
    return str(out), os.path.join(neon_root, "images"), imgs


def test_images_without_boxes_are_dropped_from_training_only(odd_coco):
    path, images, imgs = odd_coco
    cfg = load_config(CFG, ["FPN_VARIANTS.REGISTER_COCO", repr([("odd_trees", path, images)])])
    assert len(DatasetCatalog.get("odd_trees")) == 3  # evaluation sees every image
    train = get_detection_dataset_dicts(["odd_trees"], filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    assert cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS and len(train) == 2
    assert imgs[0]["id"] not in {d["image_id"] for d in train}


def test_zero_area_boxes_are_removed_by_the_mapper(odd_coco):
    path, images, imgs = odd_coco
    cfg = load_config(CFG, ["FPN_VARIANTS.REGISTER_COCO", repr([("odd_trees", path, images)])])
    d = next(x for x in DatasetCatalog.get("odd_trees") if x["image_id"] == imgs[1]["id"])
    n_boxes = len(d["annotations"])
    out = DatasetMapper(cfg, is_train=True, augmentations=[])(copy.deepcopy(d))
    areas = out["instances"].gt_boxes.area()
    assert len(out["instances"]) == n_boxes - 1 and bool((areas > 0).all())


def test_missing_image_file_names_the_file(odd_coco):
    path, images, _ = odd_coco
    cfg = load_config(CFG, ["FPN_VARIANTS.REGISTER_COCO", repr([("odd_trees", path, images)])])
    d = dict(DatasetCatalog.get("odd_trees")[1], file_name="/nowhere/tile_0001.png")
    with pytest.raises(FileNotFoundError, match="/nowhere/tile_0001.png"):
        DatasetMapper(cfg, is_train=False, augmentations=[])(d)


@pytest.mark.parametrize("content, match", [
    ('{"images": [{"id": 1, "file_name": "a.png", "height": 2', "corrupt or truncated JSON"),
    ('{"info": {}}', "is not a COCO instances json"),
])
def test_corrupt_annotation_json_names_the_file(tmp_path, neon_root, content, match):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    name = f"bad_{len(content)}"
    load_config(CFG, ["FPN_VARIANTS.REGISTER_COCO", repr([(name, str(bad), os.path.join(neon_root, "images"))])])
    with pytest.raises(ValueError, match=match) as e:
        DatasetCatalog.get(name)
    assert str(bad) in str(e.value)


def test_checkpoint_of_another_variant_is_refused_for_evaluation(tmp_path):
    full = small_cfg("build_fpn_full_backbone")
    full.OUTPUT_DIR = str(tmp_path)
    DetectionCheckpointer(build_model(full), save_dir=str(tmp_path)).save("model_fpn")
    weights = str(tmp_path / "model_fpn.pth")
    same = full.clone()
    same.MODEL.WEIGHTS = weights
    assert load_weights_for_eval(build_model(same), same) == weights
    panet = small_cfg("build_fpn_panet_backbone")
    panet.MODEL.WEIGHTS, panet.OUTPUT_DIR = weights, str(tmp_path)
    with pytest.raises(ValueError, match=r"does not fit this model .*build_fpn_panet_backbone.*missing \(backbone\.post_paths"):
        load_weights_for_eval(build_model(panet), panet)
    wider = small_cfg("build_fpn_full_backbone", d=64)
    wider.MODEL.WEIGHTS, wider.OUTPUT_DIR = weights, str(tmp_path)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_weights_for_eval(build_model(wider), wider)
    empty = full.clone()
    empty.MODEL.WEIGHTS = ""
    with pytest.raises(ValueError, match="no weights were loaded"):
        load_weights_for_eval(build_model(empty), empty)
    # the predictor path (DefaultPredictor's habit) is strict too
    from fpn_variants.engine import Predictor

    with pytest.raises(ValueError, match=r"does not fit this model .*build_fpn_panet_backbone"):
        Predictor(panet)
    pred = Predictor(same)
    out = pred(np.zeros((64, 80, 3), dtype=np.uint8))["instances"]
    assert out.image_size == (64, 80) and pred.cfg.MODEL.WEIGHTS == weights


def test_non_finite_loss_stops_training_with_the_iteration(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", CFG, "MODEL.PIXEL_STD", "[0.0, 0.0, 0.0]",
         "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0", "MODEL.FPN.OUT_CHANNELS", "32",
         "OUTPUT_DIR", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode != 0
    out = proc.stderr + proc.stdout
    # Detectron2 stops at the first non-finite value it meets: the RPN's boxes / scores (here, inputs
    # divided by a zero PIXEL_STD) or the total loss ("Loss became infinite or NaN at iteration=N")
    assert ("FloatingPointError: Predicted boxes or scores contain Inf/NaN. Training has diverged." in out
            or "FloatingPointError: Loss became infinite or NaN at iteration=" in out)
    assert not os.path.exists(os.path.join(tmp_path, "model_final.pth"))


@pytest.mark.parametrize("d", [32, 64, 96])
def test_residual_laterals_with_gn_and_a_bottleneck_gn_cannot_group_fail_at_build(d):
    """The residual preset's bottleneck is d // 4: with GN (32 groups) and d = 32 / 64 / 96 it is
    8 / 16 / 24 channels, which torch's GroupNorm rejects deep inside; the pyramid names it at build."""
    cfg = small_cfg("build_fpn_residual_backbone", d=d)
    cfg.MODEL.FPN.NORM = "GN"
    with pytest.raises(ValueError, match=rf"bottleneck width is {d // 4} \(d // 4 with d = {d}\), not a multiple of 32"):
        build_model(cfg)
    cfg.FPN_VARIANTS.RESIDUAL_BOTTLENECK_CHANNELS = 32  # the remedy the message names
    assert build_model(cfg) is not None


def test_top_block_follows_the_coarsest_level_of_in_features():
    """IN_FEATURES res2..res4 with the default top block (the paper's P6 = subsampled coarsest level)
    builds P2..P5 with P5 subsampled from P4, instead of failing at the first forward."""
    import torch

    cfg = small_cfg()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4"]
    from detectron2.modeling import build_backbone

    with pytest.raises(ValueError, match=r"MODEL.RPN.IN_FEATURES = .* reads \['p6'\], which build_fpn_full_backbone does not output"):
        build_backbone(cfg)  # the RPN still reads P2..P6: caught at build, not at its first forward
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    backbone = build_backbone(cfg)
    shapes = backbone.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"p2": 4, "p3": 8, "p4": 16, "p5": 32}
    out = backbone(torch.zeros(1, 3, 64, 96))
    assert out["p5"].shape[-2:] == (2, 3) and torch.equal(out["p5"], out["p4"][..., ::2, ::2])


def test_top_block_at_another_stride_or_missing_input_fails_at_build():
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.fpn import LastLevelMaxPool

    from fpn_variants.modeling.pyramid import FeaturePyramid

    shapes = {f"res{k}": ShapeSpec(channels=8, stride=2**k) for k in (2, 3, 4, 5)}
    with pytest.raises(ValueError, match=r"top block input 'p5' is neither a bottom-up map .* nor a pyramid level "
                                         r"\(p2, p3, p4\)"):
        FeaturePyramid(shapes, ["res2", "res3", "res4"], 8, top_block=LastLevelMaxPool())
    top = LastLevelMaxPool()
    top.in_feature = "res4"
    with pytest.raises(ValueError, match=r"top block input 'res4' has stride 16 but the coarsest level .* stride 32"):
        FeaturePyramid(shapes, ["res2", "res3", "res4", "res5"], 8, top_block=top)


def test_retinanet_by_name_swap_fails_at_build_with_the_p3_p7_recipe():
    """Detectron2's RetinaNet config with a pyramid swapped in by name: the default pyramid outputs
    p2..p6, RetinaNet reads p3..p7. Not Detectron2's bare ``KeyError: 'p7'`` but the recipe."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    from fpn_variants import add_fpn_variants_config

    cfg = add_fpn_variants_config(get_cfg())
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/retinanet_R_50_FPN_3x.yaml"))
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS, cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = "cpu", "", 18, 64
    cfg.MODEL.BACKBONE.NAME = "build_fpn_panet_backbone"
    with pytest.raises(ValueError, match=r"MODEL.RETINANET.IN_FEATURES = .* reads \['p7'\], which build_fpn_panet_backbone "
                                         r"does not output .*FPN_VARIANTS.TOP_BLOCK p6p7_c5, as configs/heads/retinanet_fpn.yaml"):
        build_model(cfg)
    cfg.MODEL.FPN.IN_FEATURES, cfg.FPN_VARIANTS.TOP_BLOCK = ["res3", "res4", "res5"], "p6p7_c5"  # the recipe builds
    assert sorted(build_model(cfg).backbone.output_shape()) == ["p3", "p4", "p5", "p6", "p7"]
